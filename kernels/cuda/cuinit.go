//go:build cuda && !cudaemu && cgo

package cuda

// gorgonia.org/cu calls cuInit in its package init and exits the process
// (os.Exit(1), after printing "Error in initialization ... NoDevice") when
// it fails — before any code of the program runs, so a CUDA build could not
// even report that there is no GPU, let alone fall back to the CPU.
//
// To turn that exit into an error from Open, this file interposes cuInit:
// the executable's own definition takes precedence over libcuda's, so the
// call in cu's init lands here. The first call runs the driver's cuInit
// (found with dlsym(RTLD_NEXT)), records its result and reports success to
// cu; later calls pass the driver's result through. Open checks the
// recorded result first. If initialisation failed, every other driver call
// fails with CUDA_ERROR_NOT_INITIALIZED, so nothing can run on a device that
// did not initialise.

/*
#cgo CFLAGS: -D_GNU_SOURCE
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <cuda.h>

static int blendragInitCalls;
static CUresult blendragInitResult = CUDA_SUCCESS;

CUresult CUDAAPI cuInit(unsigned int flags) {
	CUresult (*real)(unsigned int) = (CUresult (*)(unsigned int))dlsym(RTLD_NEXT, "cuInit");
	CUresult r = real ? real(flags) : CUDA_ERROR_NOT_FOUND;
	if (blendragInitCalls++ == 0) {
		blendragInitResult = r;
		return CUDA_SUCCESS;
	}
	return r;
}

static CUresult blendragInitStatus(void) { return blendragInitCalls ? blendragInitResult : CUDA_ERROR_NOT_INITIALIZED; }
*/
import "C"

import "fmt"

// initError returns the driver's initialisation failure, if any, as an
// error naming the CUDA result (e.g. CUDA_ERROR_NO_DEVICE).
func initError() error {
	r := C.blendragInitStatus()
	if r == C.CUDA_SUCCESS {
		return nil
	}
	var name, desc *C.char
	C.cuGetErrorName(r, &name)
	C.cuGetErrorString(r, &desc)
	n, s := "unknown CUresult", ""
	if name != nil {
		n = C.GoString(name)
	}
	if desc != nil {
		s = ": " + C.GoString(desc)
	}
	return fmt.Errorf("the CUDA driver did not initialise (%s, %d%s)", n, int(r), s)
}
