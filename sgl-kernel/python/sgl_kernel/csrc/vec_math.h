// Vectorizable float math shared by the C++ CPU kernels (included; no exported symbols).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sgl_cpu {

// exp(x) for x in [-87.3, 88.7] (callers clamp), max error ~2 ulp; branch-free so that
// GCC vectorizes loops calling it (std::exp does not vectorize without -ffast-math).
inline float exp_poly(float x) {
  const float l2e = 1.44269504088896341f;
  const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  float n = std::nearbyint(x * l2e);
  float r = x - n * ln2_hi;
  r = r - n * ln2_lo;
  // Cephes expf polynomial on [-ln2/2, ln2/2]
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace sgl_cpu
