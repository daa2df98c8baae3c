package main

import (
	"math"
	"slices"
	"testing"
)

func TestDraftPassagesAreTheMostOverlappingInPromptOrder(t *testing.T) {
	texts := []string{
		"The weather in Spain is mild.",
		"Edwin Clay built the Old Stone Bridge of Marlow.",
		"Bakers sell honey bread.",
		"The bridge at Marlow has seven arches.",
		"Clay is a soil.",
	}
	got := draftPassages("Who built the Old Stone Bridge of Marlow?", texts, 2)
	if want := []int{1, 3}; !slices.Equal(got, want) {
		t.Errorf("draftPassages = %v, want %v", got, want)
	}
	if got := draftPassages("anything", texts, 9); len(got) != len(texts) {
		t.Errorf("k above the passage count: %v", got)
	}
}

func TestRapidConfigsParseGammaAndEtaLists(t *testing.T) {
	cs, err := rapidConfigs([]string{"auto", "4"}, []float64{0, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	// Per η: each γ (drafting throughout) and the defaults.
	if len(cs) != 6 || !cs[0].Adaptive || cs[1].Gamma != 4 || cs[1].Adaptive || !cs[2].Default || cs[3].Eta != 0.5 {
		t.Errorf("configs %+v", cs)
	}
	for _, bad := range [][]string{{"0"}, {"17"}, {"fast"}} {
		if _, err := rapidConfigs(bad, []float64{0}); err == nil {
			t.Errorf("--gamma %v accepted", bad)
		}
	}
	if _, err := rapidConfigs([]string{"auto"}, []float64{math.NaN()}); err == nil {
		t.Error("NaN η accepted")
	}
}

func TestSummarizeRapidSpeedupIsTotalTimePerToken(t *testing.T) {
	cfgs, _ := rapidConfigs([]string{"4"}, []float64{0})
	rec := func(targetMS, rapidMS float64, acc int) rapidRecord {
		r := rapidRecord{TargetRows: 100, DraftRows: 20}
		r.Target.DecodeMS, r.Target.Tokens = targetMS, 10
		r.Runs = []rapidRun{{Tokens: 10, DecodeMS: rapidMS, Drafted: 8, Accepted: acc, Rounds: 2, GammaMean: 4, Bound: 1, Same: true, Agreement: 1}, {Tokens: 10, DecodeMS: targetMS}}
		return r
	}
	// 200 ms of target against 100 ms of RAPID for 20 tokens each: 2×.
	s := summarizeRapid(&evalRapidFlags{}, cfgs, []rapidRecord{rec(100, 40, 8), rec(100, 60, 4)})
	c := s.Configs[0]
	if math.Abs(c.Speedup-2) > 1e-12 || math.Abs(c.AcceptRate-0.75) > 1e-12 || c.MeanAccepted != 3 || c.Same != 2 || math.Abs(c.OfBound-2) > 1e-12 {
		t.Errorf("summary %+v", c)
	}
}
