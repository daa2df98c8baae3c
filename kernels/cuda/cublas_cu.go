//go:build cuda && !cudaemu && cgo

package cuda

// cuBLAS is opened at run time with dlopen rather than linked. Linking it
// (as gorgonia.org/cu/blas does) ties the binary to the cuBLAS major version
// of the build machine: its symbols are versioned (cublasSgemm_v2@libcublas.so.11),
// so a binary built against Debian's CUDA 11.8 refuses to start on a host
// whose toolkit ships only libcublas.so.12 or .13, although the few
// functions used here have kept their ABI since CUDA 10. Opening it lazily
// also means a binary that never calls MatMulBLAS needs no cuBLAS at all.
//
// The library is the one named by $BLENDRAG_CUBLAS, else the first of
// libcublas.so.13, .12, .11 and libcublas.so that the dynamic loader finds
// (LD_LIBRARY_PATH, the ld.so cache).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef int (*blendragCreateFn)(void **);
typedef int (*blendragDestroyFn)(void *);
typedef int (*blendragSgemmFn)(void *, int, int, int, int, int, const float *, const void *, int,
	const void *, int, const float *, void *, int);

typedef struct {
	void *lib;
	blendragCreateFn create;
	blendragDestroyFn destroy;
	blendragSgemmFn sgemm;
} blendragBLAS;

// blendragOpenBLAS loads path and its three functions; 0 on success, 1 if the
// library cannot be opened, 2 if a function is missing.
static int blendragOpenBLAS(blendragBLAS *b, const char *path) {
	b->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!b->lib) return 1;
	b->create = (blendragCreateFn)dlsym(b->lib, "cublasCreate_v2");
	b->destroy = (blendragDestroyFn)dlsym(b->lib, "cublasDestroy_v2");
	b->sgemm = (blendragSgemmFn)dlsym(b->lib, "cublasSgemm_v2");
	if (!b->create || !b->destroy || !b->sgemm) {
		dlclose(b->lib);
		b->lib = 0;
		return 2;
	}
	return 0;
}

static const char *blendragDLError(void) { return dlerror(); }
static int blendragCreate(blendragBLAS *b, void **h) { return b->create(h); }
static int blendragDestroy(blendragBLAS *b, void *h) { return b->destroy(h); }

// blendragSgemm: column-major C (m×n) = op(A)·op(B) with alpha 1, beta 0;
// A, B and C are device pointers (host pointer mode for alpha and beta).
static int blendragSgemm(blendragBLAS *b, void *h, int transA, int transB, int m, int n, int k,
	unsigned long long a, int lda, unsigned long long bm, int ldb, unsigned long long c, int ldc) {
	float one = 1, zero = 0;
	return b->sgemm(h, transA, transB, m, n, k, &one, (const void *)a, lda, (const void *)bm, ldb, &zero, (void *)c, ldc);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"unsafe"
)

// cublasLibs are the sonames tried in order when $BLENDRAG_CUBLAS is unset.
var cublasLibs = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}

// cuBLAS operation codes (cublasOperation_t).
const (
	cublasOpN = 0
	cublasOpT = 1
)

// cublas is a dlopen'd cuBLAS and one handle on the driver's context.
type cublas struct {
	lib    C.blendragBLAS
	handle unsafe.Pointer
	name   string
}

// openCUBLAS loads cuBLAS and creates a handle; the driver's context must be
// current on the calling thread.
func openCUBLAS() (*cublas, error) {
	names := cublasLibs
	if p := os.Getenv("BLENDRAG_CUBLAS"); p != "" {
		names = []string{p}
	}
	b := &cublas{}
	var tried []error
	for _, name := range names {
		cname := C.CString(name)
		rc := C.blendragOpenBLAS(&b.lib, cname)
		C.free(unsafe.Pointer(cname))
		if rc == 0 {
			b.name = name
			break
		}
		msg := "cublasCreate_v2, cublasDestroy_v2 or cublasSgemm_v2 missing"
		if rc == 1 {
			msg = C.GoString(C.blendragDLError())
		}
		tried = append(tried, fmt.Errorf("%s: %s", name, msg))
	}
	if b.name == "" {
		return nil, fmt.Errorf("cuBLAS not found (set BLENDRAG_CUBLAS to its path or add its folder to LD_LIBRARY_PATH): %w", errors.Join(tried...))
	}
	if st := C.blendragCreate(&b.lib, &b.handle); st != 0 {
		C.dlclose(b.lib.lib)
		return nil, fmt.Errorf("cublasCreate (%s): status %d", b.name, int(st))
	}
	return b, nil
}

// sgemm runs column-major C (m×n) = op(A)·op(B) on device pointers.
func (b *cublas) sgemm(transA, transB, m, n, k int, a uintptr, lda int, bm uintptr, ldb int, c uintptr, ldc int) error {
	st := C.blendragSgemm(&b.lib, b.handle, C.int(transA), C.int(transB), C.int(m), C.int(n), C.int(k),
		C.ulonglong(a), C.int(lda), C.ulonglong(bm), C.int(ldb), C.ulonglong(c), C.int(ldc))
	if st != 0 {
		return fmt.Errorf("cublasSgemm (%s): status %d", b.name, int(st))
	}
	return nil
}

// close destroys the handle; the library stays loaded (unloading cuBLAS
// while the process runs is not supported by NVIDIA).
func (b *cublas) close() error {
	if st := C.blendragDestroy(&b.lib, b.handle); st != 0 {
		return fmt.Errorf("cublasDestroy (%s): status %d", b.name, int(st))
	}
	return nil
}
