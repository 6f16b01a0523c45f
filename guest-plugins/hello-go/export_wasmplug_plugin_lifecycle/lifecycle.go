// hello-go: the reference greeter plugin (world `greeter-plugin` of
// wit/plugin.wit) in Go, built with stock Go (GOOS=wasip1, -buildmode=c-shared)
// and `wit-bindgen go`. Behaves like the Rust `hello` plugin at 1.0.0.
//
// Built with `-tags wit_1_1` (`WIT_VERSION=1.1 ./build.sh`) it targets world
// 1.1.0 (wit/v1.1/plugin.wit) instead and is hello-go@1.1.0: it adds
// `farewell`, and `welcome` uses the embedder's `greeting` setting (the 1.1
// `config` import) when there is one. Everything else is as in 1.0.0.
//
// `wit-bindgen go` generates the `main` package (wit_exports.go) and one
// package per imported interface; a plugin provides one package per exported
// interface, named `export_<interface>`, with a function per WIT function.
// This package is `lifecycle`; export_wasmplug_plugin_greeter is `greeter`.
//
// Package state is per instance: every instance has its own linear memory,
// so its own Go heap and globals.
package export_wasmplug_plugin_lifecycle

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"wit_component/wasmplug_plugin_host"
	"wit_component/wasmplug_plugin_types"
)

// Name is the plugin's name; Version (version.go, version_1_1.go) depends on
// the world version it is built for.
const Name = "hello-go"

// Set by Init.
var initialised bool

// Identity must not depend on Init: the host calls it first.
func Identity() wasmplug_plugin_types.Identity {
	return wasmplug_plugin_types.Identity{Name: Name, Version: Version}
}

// Init is called once per instance, before anything else but Identity.
// Returning witTypes.Err refuses the instance.
func Init() witTypes.Result[witTypes.Unit, string] {
	initialised = true
	wasmplug_plugin_host.Log(wasmplug_plugin_types.Level_Info, "init "+Name+"@"+Version)
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

// RequireInit traps (a Go panic ends the instance) if the host skipped Init.
func RequireInit() {
	if !initialised {
		panic("greeter called before init")
	}
}
