//go:build !wit_1_1

package export_wasmplug_plugin_greeter

// World 1.0 has no settings: Welcome always says "Welcome".
func greeting() (string, bool) { return "", false }
