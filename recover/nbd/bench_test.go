package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkServeRead measures the server alone, in process: one
// connection, simple replies, depth requests in flight, from memory.
func BenchmarkServeRead(b *testing.B) {
	m := newMem(1, []Extent{{Length: 64 << 20}})
	for _, tc := range []struct{ size, depth int }{{4096, 1}, {4096, 16}, {256 << 10, 16}} {
		b.Run(fmt.Sprintf("size=%d/depth=%d", tc.size, tc.depth), func(b *testing.B) {
			h := start(b, &Server{Exports: []Export{memExport("m", m, false)}})
			c := dial(b, h.path, flagCFixedNewstyle)
			c.negotiate("m", false, false)
			c.nc.SetDeadline(time.Time{})
			reqs := make([][]byte, 1024)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range reqs {
				off := r.Int64N(int64(len(m.b)-tc.size)) &^ 4095
				reqs[i] = binary.BigEndian.AppendUint32(nil, magicRequest)
				reqs[i] = binary.BigEndian.AppendUint32(reqs[i], cmdRead)
				reqs[i] = binary.BigEndian.AppendUint64(reqs[i], uint64(i))
				reqs[i] = binary.BigEndian.AppendUint64(reqs[i], uint64(off))
				reqs[i] = binary.BigEndian.AppendUint32(reqs[i], uint32(tc.size))
			}
			reply := make([]byte, 16+tc.size)
			b.SetBytes(int64(tc.size))
			b.ReportAllocs()
			b.ResetTimer()
			sent := 0
			for i := range b.N {
				for sent < b.N && sent < i+tc.depth {
					c.nc.Write(reqs[sent%len(reqs)])
					sent++
				}
				if _, err := io.ReadFull(c.br, reply); err != nil {
					b.Fatal(err)
				}
				if binary.BigEndian.Uint32(reply[4:]) != 0 {
					b.Fatal("read failed")
				}
			}
			b.StopTimer()
			c.disconnect()
		})
	}
}
