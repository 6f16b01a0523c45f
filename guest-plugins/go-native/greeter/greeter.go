// The Go native plugin of the demo (`go build -buildmode=plugin`): the
// greeter of hello-go, as Go's own plugin package loads it. build.sh makes
// a second version (Version "2.0.0", "Welcome back") at the same package
// path, and N distinct builds that differ by the constant Build.
package main

const Version = "1.0.0"

// Build tells the N distinct builds apart (build.sh rewrites it).
const Build = 0

// Inits counts how often this package's init ran in the process.
var Inits int

var counter uint32

func init() { Inits++ }

func Identity() string { return "greeter@" + Version }

func Welcome(name string) string { return "Welcome, " + name + "!" }

func Count() uint32 {
	counter++
	return counter
}

func BuildNumber() int { return Build }
