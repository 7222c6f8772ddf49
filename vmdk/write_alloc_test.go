package vmdk

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// TestWriteAllocsPerGrain proves the per-grain path does not allocate:
// writing 16 times more grains costs (almost) no more allocations.
func TestWriteAllocsPerGrain(t *testing.T) {
	for _, sf := range allSubformats {
		src := bytes.Repeat([]byte("0123456789abcdef"), 32<<20/16)
		count := func(size int64) float64 {
			dir := t.TempDir()
			i := 0
			return testing.AllocsPerRun(2, func() {
				i++
				p := filepath.Join(dir, fmt.Sprintf("a%d.vmdk", i))
				if err := Write(context.Background(), p, bytes.NewReader(src), size, nil, &WriteOptions{Subformat: sf, Jobs: 2, Transform: func(d, s []byte, off int64) {}}); err != nil {
					t.Fatal(err)
				}
			})
		}
		small, big := count(2<<20), count(32<<20)
		grains := float64((32<<20)-(2<<20)) / DefaultGrainSize
		if (big-small)/grains > 0.05 {
			t.Errorf("%s: %.0f allocations for 2 MiB, %.0f for 32 MiB: %.2f per grain", sf, small, big, (big-small)/grains)
		}
		t.Logf("%s: %.0f allocations for 2 MiB, %.0f for 32 MiB", sf, small, big)
	}
}
