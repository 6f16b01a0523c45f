// The Go side of `just demo`: Go's own plugin package on the demo's
// scenarios, measured in this process. build.sh builds this host and the
// plugins; the Rust demo runs it and parses its output, one `key=value` per
// line (values never hold a newline).
//
//	host DIR N   # DIR: what build.sh wrote; N: the distinct builds to open
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"plugin"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

func out(key string, value any) {
	fmt.Printf("%s=%s\n", key, strings.ReplaceAll(fmt.Sprint(value), "\n", " "))
}

// rssKiB is VmRSS from /proc/self/status, after a GC that returns what it can.
func rssKiB() int {
	runtime.GC()
	debug.FreeOSMemory()
	status, err := os.ReadFile("/proc/self/status")
	check(err)
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			check(err)
			return kib
		}
	}
	panic("no VmRSS in /proc/self/status")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-native host:", err)
		os.Exit(1)
	}
}

func lookup[T any](p *plugin.Plugin, name string) T {
	sym, err := p.Lookup(name)
	check(err)
	value, ok := sym.(T)
	if !ok {
		check(fmt.Errorf("symbol %s is %T", name, sym))
	}
	return value
}

// list formats like Rust's Debug of a slice: [1, 2, 3].
func list[T any](values []T) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func errText(err error) string {
	if err == nil {
		return "none: it loaded"
	}
	return err.Error()
}

func main() {
	if len(os.Args) != 3 {
		check(fmt.Errorf("usage: host DIR N"))
	}
	dir := os.Args[1]
	n, err := strconv.Atoi(os.Args[2])
	check(err)
	out("go.version", runtime.Version())
	out("rss.start_kib", rssKiB())

	// 1. The same file opened twice.
	path := filepath.Join(dir, "greeter-v1.so")
	start := time.Now()
	first, err := plugin.Open(path)
	check(err)
	out("first_open_ms", fmt.Sprintf("%.2f", float64(time.Since(start).Microseconds())/1000))
	second, err := plugin.Open(path)
	check(err)
	out("twice.same_object", first == second)
	out("twice.inits", *lookup[*int](first, "Inits"))
	countA, countB := lookup[func() uint32](first, "Count"), lookup[func() uint32](second, "Count")
	a := []uint32{countA(), countA(), countA()}
	out("twice.counts_a", list(a))
	out("twice.count_b", countB())
	welcome := lookup[func(string) string](first, "Welcome")
	out("twice.identity", lookup[func() string](first, "Identity")())
	out("twice.welcome", welcome("Gopher"))

	// 2. A second version of the plugin, same package path.
	before := rssKiB()
	_, err = plugin.Open(filepath.Join(dir, "greeter-v2.so"))
	out("second_version.error", errText(err))
	out("second_version.rss_growth_kib", rssKiB()-before)

	// 3. A byte-identical copy under another name.
	copyPath := filepath.Join(dir, "greeter-copy.so")
	check(copyFile(path, copyPath))
	before = rssKiB()
	_, err = plugin.Open(copyPath)
	out("copy.error", errText(err))
	out("copy.rss_growth_kib", rssKiB()-before)

	// 4. Two plugins built against two versions of a shared package.
	s1, err := plugin.Open(filepath.Join(dir, "uses-shared-v1.so"))
	check(err)
	c1 := lookup[func() int](s1, "Count")
	out("shared.first_counts", list([]int{c1(), c1(), c1()}))
	out("shared.first_welcome", lookup[func(string) string](s1, "Welcome")("A"))
	_, err = plugin.Open(filepath.Join(dir, "uses-shared-v2.so"))
	out("shared.second_error", errText(err))

	// 6. N distinct builds opened one after another; nothing can be closed.
	base := rssKiB()
	out("versions.n", n)
	out("versions.baseline_kib", base)
	var opening time.Duration
	for i := 1; i <= n; i++ {
		start := time.Now()
		p, err := plugin.Open(filepath.Join(dir, "many", fmt.Sprintf("v%03d.so", i)))
		opening += time.Since(start)
		check(err)
		if got := lookup[func() int](p, "BuildNumber")(); got != i {
			check(fmt.Errorf("build %d says %d", i, got))
		}
		lookup[func() uint32](p, "Count")()
		if i%50 == 0 || i == n {
			out(fmt.Sprintf("versions.after_%d_kib", i), rssKiB())
		}
	}
	if n > 0 {
		out("versions.open_ms_each", fmt.Sprintf("%.2f", float64(opening.Microseconds())/1000/float64(n)))
	}
	out("versions.final_kib", rssKiB())
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
