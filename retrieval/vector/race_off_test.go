//go:build !race

package vector

// raceEnabled shrinks the HNSW tests' data under the race detector, which
// slows the distance loops about tenfold.
const raceEnabled = false
