package blend

import (
	"math"
	"time"
)

// AutoRatio is CacheBlend's loading controller: the recompute ratio
// max(minRatio, r_load), where r_load is the ratio at which recomputing
// r·rows rows of one layer takes as long as loading one layer's chunk KV
// (r_load = loadPerLayer / (rows·recomputePerRow)), so recomputation hides
// behind loading. The result is clamped to [0, 1]; without a usable
// estimate (rows or recomputePerRow not positive) it is minRatio, clamped.
func AutoRatio(minRatio float64, loadPerLayer, recomputePerRow time.Duration, rows int) float64 {
	r := minRatio
	if rows > 0 && recomputePerRow > 0 && loadPerLayer > 0 {
		r = math.Max(r, float64(loadPerLayer)/(float64(rows)*float64(recomputePerRow)))
	}
	if !(r >= 0) { // negative or NaN
		return 0
	}
	return math.Min(r, 1)
}
