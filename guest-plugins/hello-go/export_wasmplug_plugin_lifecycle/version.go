//go:build !wit_1_1

package export_wasmplug_plugin_lifecycle

// Version of hello-go built against world 1.0.0.
const Version = "1.0.0"
