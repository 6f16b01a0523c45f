// The `greeter` export of hello-go (see ../export_wasmplug_plugin_lifecycle).
//
// Strings: arguments arrive as Go strings that view the memory the host
// wrote them into; they stay valid as long as you keep them (that memory is
// on the Go heap). Return any Go string; the bindings keep it pinned until
// the host has copied it.
package export_wasmplug_plugin_greeter

import (
	"math"
	"os"

	witTypes "go.bytecodealliance.org/pkg/wit/types"

	lifecycle "wit_component/export_wasmplug_plugin_lifecycle"
	"wit_component/wasmplug_plugin_types"
)

// This instance's counter; never shared with another instance.
var counter uint32

// Welcome greets name. The 1.1 build uses the embedder's `greeting` setting
// when there is one (greeting(): greeter_1_0.go, greeter_1_1.go).
func Welcome(name string) string {
	lifecycle.RequireInit()
	if g, ok := greeting(); ok {
		return g + ", " + name + "!"
	}
	return "Welcome, " + name + "!"
}

func Hello(who wasmplug_plugin_types.User) string {
	lifecycle.RequireInit()
	return "Hello, " + who.Name + "!"
}

func Count() uint32 {
	lifecycle.RequireInit()
	counter++
	return counter
}

// Birthday returns who one year older (saturating at math.MaxUint32), or the
// plugin's own error (not a crash) for a user without a name, which it also
// writes to stderr, as a plugin's diagnostics go: the host logs it, tagged
// with the plugin. (The write goes through the handle the WASI adapter
// opened when the Go runtime started: a pre-initialized snapshot's instance
// must hold it too.)
func Birthday(who wasmplug_plugin_types.User) witTypes.Result[wasmplug_plugin_types.User, string] {
	lifecycle.RequireInit()
	if who.Name == "" {
		os.Stderr.WriteString("birthday: refused a user without a name\n")
		return witTypes.Err[wasmplug_plugin_types.User, string]("a user needs a name")
	}
	if who.Age < math.MaxUint32 {
		who.Age++
	}
	return witTypes.Ok[wasmplug_plugin_types.User, string](who)
}
