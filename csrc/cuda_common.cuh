// Helpers shared by the .cu files. No torch headers here either.
#pragma once
#include <cuda_runtime.h>

namespace pinngs {
inline cudaStream_t as_stream(void *s) { return reinterpret_cast<cudaStream_t>(s); }
inline unsigned blocks_for(long long n, int threads) { return unsigned((n + threads - 1) / threads); }

template <int K> __device__ __forceinline__ void warp_sum(float (&s)[K]) {
#pragma unroll
    for (int k = 0; k < K; ++k)
        for (int off = 16; off > 0; off >>= 1) s[k] += __shfl_down_sync(0xffffffffu, s[k], off);
}
}  // namespace pinngs
