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

// 16 float lanes (one AVX-512 register with -march=native; GCC splits it elsewhere)
typedef float v16 __attribute__((vector_size(64)));

inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  return v;
}

typedef int32_t v16i __attribute__((vector_size(64)));

inline float hsum(v16 v) {
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += v[l];
  return s;
}

// The lane sums of a, b, c, d in lanes 0, 4, 8, 12: a tree of shuffles and adds, 12 vector
// ops for four sums instead of 4 x 15 scalar adds (the sums are a third of a short-K tile).
inline v16 hsum4(v16 a, v16 b, v16 c, v16 d) {
  const v16i lo = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
  const v16i hi = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
  const v16 ab = __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);  // a's 8 | b's 8
  const v16 cd = __builtin_shuffle(c, d, lo) + __builtin_shuffle(c, d, hi);
  const v16i lo4 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
  const v16i hi4 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
  v16 s = __builtin_shuffle(ab, cd, lo4) + __builtin_shuffle(ab, cd, hi4);  // 4 lanes each of a, b, c, d
  const v16i sw2 = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
  s += __builtin_shuffle(s, sw2);
  const v16i sw1 = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
  return s + __builtin_shuffle(s, sw1);
}

}  // namespace sgl_cpu
