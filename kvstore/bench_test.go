package kvstore

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkLoad measures a warm Load of four 512-token chunks of
// SmolLM2-135M's shape (30 layers × KV dimension 192) per codec; bytes/s is
// the decoded float32 K and V.
func BenchmarkLoad(b *testing.B) {
	const layers, rows, dim, chunks = 30, 512, 192, 4
	for _, c := range []Codec{CodecFP16, CodecInt8, CodecQ4G32} {
		b.Run(string(c), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{Codec: c, Logger: quiet, DiskBudget: 1 << 32})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var keys []Key
			for i := range chunks {
				k := key(fmt.Sprint(i))
				if err := s.Put(k, synthKV(uint64(i), layers, rows, dim, 0)); err != nil {
					b.Fatal(err)
				}
				keys = append(keys, k)
			}
			b.SetBytes(int64(chunks * layers * 2 * rows * dim * 4))
			b.ResetTimer()
			for range b.N {
				ld, err := s.Load(context.Background(), keys)
				if err != nil {
					b.Fatal(err)
				}
				for l := range layers {
					if _, _, err := ld.LoadLayer(l); err != nil {
						b.Fatal(err)
					}
				}
				ld.Close()
			}
		})
	}
}
