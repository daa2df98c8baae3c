package cur

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// TestSolveMatchesNumpyPinv checks u = c·pinv(W) with the relative cut-off
// against numpy.linalg.pinv (testdata/gen_pinv_golden.py) on a W whose
// singular values run from 1 to 1e-9, so each rcond keeps a different
// number of directions.
func TestSolveMatchesNumpyPinv(t *testing.T) {
	data, err := os.ReadFile("testdata/pinv_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		W     [][]float64
		C     []float64
		Cases []struct {
			RCond float64
			U     []float64
		}
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	w := mat.NewDense(len(g.W), len(g.W[0]), nil)
	for i, row := range g.W {
		w.SetRow(i, row)
	}
	c := make([]float32, len(g.C))
	for i, v := range g.C {
		c[i] = float32(v)
	}
	for _, tc := range g.Cases {
		u, err := solve(w, c, tc.RCond)
		if err != nil {
			t.Fatal(err)
		}
		var scale, worst float64
		for i := range u {
			scale = max(scale, math.Abs(tc.U[i]))
			worst = max(worst, math.Abs(u[i]-tc.U[i]))
		}
		if worst > 1e-6*scale {
			t.Errorf("rcond %g: max |u − numpy| = %g (scale %g)\ngot  %v\nwant %v", tc.RCond, worst, scale, u, tc.U)
		}
	}
}
