// Stand-in for github.com/dapr/dapr/cmd/daprd/components/zz_notag.go (which
// panics without build tags); swapped in by `go build -overlay`. Components are
// registered by our own main package instead.
package components
