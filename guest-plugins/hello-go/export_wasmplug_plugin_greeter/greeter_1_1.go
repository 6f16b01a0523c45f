//go:build wit_1_1

// What world 1.1.0 adds (`-tags wit_1_1`): `farewell`, and the `config` import.
package export_wasmplug_plugin_greeter

import (
	lifecycle "wit_component/export_wasmplug_plugin_lifecycle"
	"wit_component/wasmplug_plugin_config"
)

// greeting is the embedder's `greeting` setting, if it has one.
func greeting() (string, bool) {
	g := wasmplug_plugin_config.Get("greeting")
	if g.IsSome() {
		return g.Some(), true
	}
	return "", false
}

// Farewell is new in 1.1.0.
func Farewell(name string) string {
	lifecycle.RequireInit()
	return "Goodbye, " + name + "!"
}
