//go:build wit_1_1

package export_wasmplug_plugin_lifecycle

// Version of hello-go built against world 1.1.0 (`-tags wit_1_1`).
const Version = "1.1.0"
