// Lane reductions shared by the AVX2 kernels.

// RED(Y, X) leaves in the low lane of X (X is Y's low half) the sum of Y's
// eight lanes in the kernels' one order: lanes i and i+4 first, then
// adjacent pairs, then the two pair sums — ((l0+l4)+(l1+l5)) +
// ((l2+l6)+(l3+l7)). Clobbers X15.
#define RED(Y, X) \
	VEXTRACTF128 $1, Y, X15 \
	VADDPS X15, X, X \
	VHADDPS X, X, X \
	VHADDPS X, X, X
