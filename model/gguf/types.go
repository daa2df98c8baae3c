package gguf

import (
	"fmt"

	"github.com/blendrag/blendrag/kernels"
)

// typeLayout returns the block geometry of a tensor type blendrag can read
// (kernels.DType.Valid): how many elements one block holds and how many
// bytes it takes. ok is false for every other type.
func typeLayout(t kernels.DType) (blockElems, blockBytes uint64, ok bool) {
	if !t.Valid() || t.BlockSize() <= 0 || t.BlockBytes() <= 0 {
		return 0, 0, false
	}
	return uint64(t.BlockSize()), uint64(t.BlockBytes()), true
}

// ggmlTypeNames names every ggml_type id, including the ones blendrag does not
// read, so that an error can say "Q2_K" rather than "10".
var ggmlTypeNames = map[kernels.DType]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_2 (removed)", 5: "Q4_3 (removed)",
	6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K",
	13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
	19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8",
	25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
	34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

// typeName renders a tensor type for messages: "Q4_1" for known ids,
// "type 77" otherwise.
func typeName(t kernels.DType) string {
	if n, ok := ggmlTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// tensorSize checks dims against type t and returns the tensor's element
// count and byte size. It rejects unsupported types, zero or oversized
// dimensions, a row length that is not a whole number of blocks, and element
// counts or byte sizes that overflow int64.
func tensorSize(t kernels.DType, dims []uint64) (elems, size uint64, err *formatError) {
	be, bb, ok := typeLayout(t)
	if !ok {
		return 0, 0, unsupported("tensor type %s is not supported", typeName(t))
	}
	if len(dims) == 0 || len(dims) > MaxDims {
		return 0, 0, malformed("%d dimensions (want 1 to %d)", len(dims), MaxDims)
	}
	const maxInt64 = 1<<63 - 1
	elems = 1
	for i, d := range dims {
		if d == 0 || d > maxInt64 {
			return 0, 0, malformed("dimension %d is %d (want 1 to 2^63-1)", i, d)
		}
		if elems > maxInt64/d {
			return 0, 0, malformed("dimensions %v overflow the element count", dims)
		}
		elems *= d
	}
	if dims[0]%be != 0 {
		return 0, 0, malformed("row length %d is not a multiple of the %s block size %d", dims[0], typeName(t), be)
	}
	blocks := elems / be
	if blocks > maxInt64/bb {
		return 0, 0, malformed("dimensions %v overflow the byte size", dims)
	}
	return elems, blocks * bb, nil
}
