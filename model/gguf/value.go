package gguf

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ValueType is the type tag of a metadata value (gguf_type). The numeric
// values are the ones stored on disk.
type ValueType uint32

// The GGUF metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7 // one byte, 0 or 1
	TypeString  ValueType = 8 // uint64 length + bytes (UTF-8 by convention, not checked)
	TypeArray   ValueType = 9 // uint32 element type + uint64 count + elements
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
	"string", "array", "uint64", "int64", "float64",
}

// String returns the type's name ("uint32", "array", ...), or "type N" for an
// unknown tag.
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return "type " + strconv.FormatUint(uint64(t), 10)
}

// valid reports whether t is one of the 13 defined types.
func (t ValueType) valid() bool { return t <= TypeFloat64 }

// fixedSize is the encoded size of a scalar of type t: 1, 2, 4 or 8 bytes,
// or 0 for strings and arrays.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// minSize is the fewest bytes an encoded value of type t can take: its fixed
// size, 8 for a string (the length), 12 for an array (type and count).
func (t ValueType) minSize() int {
	switch t {
	case TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return t.fixedSize()
}

func (t ValueType) signed() bool {
	return t == TypeInt8 || t == TypeInt16 || t == TypeInt32 || t == TypeInt64
}

func (t ValueType) integer() bool {
	switch t {
	case TypeUint8, TypeInt8, TypeUint16, TypeInt16, TypeUint32, TypeInt32, TypeUint64, TypeInt64:
		return true
	}
	return false
}

// maxArrayDepth bounds how deeply arrays of arrays may nest (an array of
// scalars has depth 1). GGUF files in the wild do not nest at all.
const maxArrayDepth = 4

// Value is one typed metadata value: a scalar, a string, or an array whose
// elements all have one type (arrays of arrays may mix element types). A
// Value is immutable; the As* accessors return copies, never shared slices.
// The zero Value is the uint8 0.
//
// Build Values for the Writer with the constructors (Uint32, String,
// Strings, Int32s, Arrays, ...); read them with the As* methods, which
// report ok=false when the value's type does not fit.
type Value struct {
	typ  ValueType
	elem ValueType // element type of an array
	// bits holds a scalar: integers zero- or sign-extended to 64 bits, bools
	// as 0/1, float32 as its 32 IEEE bits, float64 as its 64 IEEE bits.
	bits uint64
	str  string
	// arr holds an array's elements as a slice of the natural Go type:
	// []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32,
	// []bool, []string, []uint64, []int64, []float64, or []Value for arrays
	// of arrays.
	arr any
}

// Type returns the value's type tag.
func (v Value) Type() ValueType { return v.typ }

// ElemType returns the element type of an array; for other values it returns
// the value's own type.
func (v Value) ElemType() ValueType {
	if v.typ == TypeArray {
		return v.elem
	}
	return v.typ
}

// Len returns the number of elements of an array, or 0 for other values.
func (v Value) Len() int {
	if v.typ != TypeArray {
		return 0
	}
	switch a := v.arr.(type) {
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []bool:
		return len(a)
	case []string:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []Value:
		return len(a)
	}
	return 0
}

// AsUint returns an integer value of any width and signedness as a uint64;
// ok is false for non-integers and for negative values.
func (v Value) AsUint() (uint64, bool) {
	if !v.typ.integer() || (v.typ.signed() && int64(v.bits) < 0) {
		return 0, false
	}
	return v.bits, true
}

// AsInt returns an integer value of any width and signedness as an int64;
// ok is false for non-integers and for unsigned values above math.MaxInt64.
func (v Value) AsInt() (int64, bool) {
	if !v.typ.integer() || (!v.typ.signed() && v.bits > math.MaxInt64) {
		return 0, false
	}
	return int64(v.bits), true
}

// AsFloat returns a float32 or float64 value as a float64 (exactly); ok is
// false for every other type, integers included.
func (v Value) AsFloat() (float64, bool) {
	switch v.typ {
	case TypeFloat32:
		return float64(math.Float32frombits(uint32(v.bits))), true
	case TypeFloat64:
		return math.Float64frombits(v.bits), true
	}
	return 0, false
}

// AsBool returns a bool value; ok is false for every other type.
func (v Value) AsBool() (b, ok bool) {
	if v.typ != TypeBool {
		return false, false
	}
	return v.bits != 0, true
}

// AsString returns a string value; ok is false for every other type.
func (v Value) AsString() (string, bool) {
	if v.typ != TypeString {
		return "", false
	}
	return v.str, true
}

// AsStrings returns a copy of an array of strings; ok is false for every
// other value. The strings of an array parsed from a file share one backing
// allocation, so a 50k-entry vocabulary costs two allocations, not 50k.
func (v Value) AsStrings() ([]string, bool) {
	a, ok := v.arr.([]string)
	if !ok || v.typ != TypeArray {
		return nil, false
	}
	return slices.Clone(a), true
}

// AsInts returns an array of any integer type as int64s; ok is false for
// other arrays, for non-arrays, and when an unsigned element exceeds
// math.MaxInt64.
func (v Value) AsInts() ([]int64, bool) {
	if v.typ != TypeArray {
		return nil, false
	}
	switch a := v.arr.(type) {
	case []uint8:
		return convert[int64](a), true
	case []int8:
		return convert[int64](a), true
	case []uint16:
		return convert[int64](a), true
	case []int16:
		return convert[int64](a), true
	case []uint32:
		return convert[int64](a), true
	case []int32:
		return convert[int64](a), true
	case []int64:
		return slices.Clone(a), true
	case []uint64:
		out := make([]int64, len(a))
		for i, x := range a {
			if x > math.MaxInt64 {
				return nil, false
			}
			out[i] = int64(x)
		}
		return out, true
	}
	return nil, false
}

// AsUints returns an array of any integer type as uint64s; ok is false for
// other arrays, for non-arrays, and when a signed element is negative.
func (v Value) AsUints() ([]uint64, bool) {
	if v.typ != TypeArray {
		return nil, false
	}
	switch a := v.arr.(type) {
	case []uint8:
		return convert[uint64](a), true
	case []uint16:
		return convert[uint64](a), true
	case []uint32:
		return convert[uint64](a), true
	case []uint64:
		return slices.Clone(a), true
	case []int8:
		return convertNonNeg(a)
	case []int16:
		return convertNonNeg(a)
	case []int32:
		return convertNonNeg(a)
	case []int64:
		return convertNonNeg(a)
	}
	return nil, false
}

// AsFloats returns an array of float32 or float64 as float64s; ok is false
// for every other value.
func (v Value) AsFloats() ([]float64, bool) {
	if v.typ != TypeArray {
		return nil, false
	}
	switch a := v.arr.(type) {
	case []float32:
		return convert[float64](a), true
	case []float64:
		return slices.Clone(a), true
	}
	return nil, false
}

// AsBools returns a copy of an array of bools; ok is false for every other
// value.
func (v Value) AsBools() ([]bool, bool) {
	a, ok := v.arr.([]bool)
	if !ok || v.typ != TypeArray {
		return nil, false
	}
	return slices.Clone(a), true
}

// AsArray returns the elements of an array of any element type as Values
// (one allocation per call; prefer the typed accessors for large arrays); ok
// is false for non-arrays.
func (v Value) AsArray() ([]Value, bool) {
	if v.typ != TypeArray {
		return nil, false
	}
	n := v.Len()
	out := make([]Value, n)
	for i := range out {
		out[i] = v.index(i)
	}
	return out, true
}

// index returns element i of an array as a Value.
func (v Value) index(i int) Value {
	e := Value{typ: v.elem}
	switch a := v.arr.(type) {
	case []uint8:
		e.bits = uint64(a[i])
	case []int8:
		e.bits = uint64(int64(a[i]))
	case []uint16:
		e.bits = uint64(a[i])
	case []int16:
		e.bits = uint64(int64(a[i]))
	case []uint32:
		e.bits = uint64(a[i])
	case []int32:
		e.bits = uint64(int64(a[i]))
	case []float32:
		e.bits = uint64(math.Float32bits(a[i]))
	case []bool:
		if a[i] {
			e.bits = 1
		}
	case []string:
		e.str = a[i]
	case []uint64:
		e.bits = a[i]
	case []int64:
		e.bits = uint64(a[i])
	case []float64:
		e.bits = math.Float64bits(a[i])
	case []Value:
		return a[i]
	}
	return e
}

// String renders the value for humans: scalars as Go literals (strings
// quoted), arrays as "[int32×3: 1 2 3]", showing at most 8 elements.
func (v Value) String() string {
	switch v.typ {
	case TypeString:
		return strconv.Quote(v.str)
	case TypeBool:
		return strconv.FormatBool(v.bits != 0)
	case TypeFloat32:
		return strconv.FormatFloat(float64(math.Float32frombits(uint32(v.bits))), 'g', -1, 32)
	case TypeFloat64:
		return strconv.FormatFloat(math.Float64frombits(v.bits), 'g', -1, 64)
	case TypeArray:
		var b strings.Builder
		n := v.Len()
		fmt.Fprintf(&b, "[%s×%d:", v.elem, n)
		for i := 0; i < n && i < 8; i++ {
			b.WriteByte(' ')
			b.WriteString(v.index(i).String())
		}
		if n > 8 {
			b.WriteString(" ...")
		}
		b.WriteByte(']')
		return b.String()
	}
	if v.typ.signed() {
		return strconv.FormatInt(int64(v.bits), 10)
	}
	return strconv.FormatUint(v.bits, 10)
}

type number interface {
	~uint8 | ~int8 | ~uint16 | ~int16 | ~uint32 | ~int32 | ~uint64 | ~int64 | ~float32 | ~float64
}

func convert[D, S number](s []S) []D {
	out := make([]D, len(s))
	for i, x := range s {
		out[i] = D(x)
	}
	return out
}

func convertNonNeg[S ~int8 | ~int16 | ~int32 | ~int64](s []S) ([]uint64, bool) {
	out := make([]uint64, len(s))
	for i, x := range s {
		if x < 0 {
			return nil, false
		}
		out[i] = uint64(x)
	}
	return out, true
}

// Scalar constructors. Each returns a Value of the named GGUF type.

// Uint8 returns a uint8 Value.
func Uint8(x uint8) Value { return Value{typ: TypeUint8, bits: uint64(x)} }

// Int8 returns an int8 Value.
func Int8(x int8) Value { return Value{typ: TypeInt8, bits: uint64(int64(x))} }

// Uint16 returns a uint16 Value.
func Uint16(x uint16) Value { return Value{typ: TypeUint16, bits: uint64(x)} }

// Int16 returns an int16 Value.
func Int16(x int16) Value { return Value{typ: TypeInt16, bits: uint64(int64(x))} }

// Uint32 returns a uint32 Value.
func Uint32(x uint32) Value { return Value{typ: TypeUint32, bits: uint64(x)} }

// Int32 returns an int32 Value.
func Int32(x int32) Value { return Value{typ: TypeInt32, bits: uint64(int64(x))} }

// Uint64 returns a uint64 Value.
func Uint64(x uint64) Value { return Value{typ: TypeUint64, bits: x} }

// Int64 returns an int64 Value.
func Int64(x int64) Value { return Value{typ: TypeInt64, bits: uint64(x)} }

// Float32 returns a float32 Value (its bits are kept exactly, NaNs included).
func Float32(x float32) Value { return Value{typ: TypeFloat32, bits: uint64(math.Float32bits(x))} }

// Float64 returns a float64 Value (its bits are kept exactly, NaNs included).
func Float64(x float64) Value { return Value{typ: TypeFloat64, bits: math.Float64bits(x)} }

// Bool returns a bool Value.
func Bool(x bool) Value {
	v := Value{typ: TypeBool}
	if x {
		v.bits = 1
	}
	return v
}

// String returns a string Value.
func String(s string) Value { return Value{typ: TypeString, str: s} }

// Array constructors. Each copies its argument and returns an array Value
// with the named element type.

func array[T any](elem ValueType, s []T) Value {
	return Value{typ: TypeArray, elem: elem, arr: append(make([]T, 0, len(s)), s...)}
}

// Uint8s returns an array of uint8.
func Uint8s(s []uint8) Value { return array(TypeUint8, s) }

// Int8s returns an array of int8.
func Int8s(s []int8) Value { return array(TypeInt8, s) }

// Uint16s returns an array of uint16.
func Uint16s(s []uint16) Value { return array(TypeUint16, s) }

// Int16s returns an array of int16.
func Int16s(s []int16) Value { return array(TypeInt16, s) }

// Uint32s returns an array of uint32.
func Uint32s(s []uint32) Value { return array(TypeUint32, s) }

// Int32s returns an array of int32.
func Int32s(s []int32) Value { return array(TypeInt32, s) }

// Uint64s returns an array of uint64.
func Uint64s(s []uint64) Value { return array(TypeUint64, s) }

// Int64s returns an array of int64.
func Int64s(s []int64) Value { return array(TypeInt64, s) }

// Float32s returns an array of float32.
func Float32s(s []float32) Value { return array(TypeFloat32, s) }

// Float64s returns an array of float64.
func Float64s(s []float64) Value { return array(TypeFloat64, s) }

// Bools returns an array of bool.
func Bools(s []bool) Value { return array(TypeBool, s) }

// Strings returns an array of strings.
func Strings(s []string) Value { return array(TypeString, s) }

// Arrays returns an array of arrays. Every element must itself be an array
// Value (the Writer rejects the Value otherwise); their element types may
// differ. Nesting is limited to 4 levels.
func Arrays(elems ...Value) Value { return array(TypeArray, elems) }
