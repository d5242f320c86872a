// The pre-3.2 (v1) array descriptors, as the fake driver and the probe both spell them: the _v2 fields
// with unsigned int extents. cuda.h declares them only for the driver's own build. Kept apart from the
// shim's own copy (shim/real.h) on purpose, so the tests check the shim against an independent layout.
#pragma once

#include <cuda.h>

namespace tessera::fake {

struct ArrayDescV1 {
  unsigned int Width, Height;
  CUarray_format Format;
  unsigned int NumChannels;
};
struct Array3DDescV1 {
  unsigned int Width, Height, Depth;
  CUarray_format Format;
  unsigned int NumChannels, Flags;
};

}  // namespace tessera::fake
