// A package two plugins link: build.sh makes a second version of it (the
// constant Version) for the second plugin.
package shared

const Version = "1.0.0"

// Counter is the package's global: one per process under Go's plugins.
var Counter int

func Next() int {
	Counter++
	return Counter
}
