// y = x W^T (+ b) for a few rows of x (up to 64; the engine sends decode batches of 1..16), float32,
// on W's own row-major layout, shared out on the spin pool (spin_pool.h).
//
// Why: at batch 1 a decode step is ~120 GEMVs that read the weights once, so its floor is
// weight bytes / memory bandwidth; this kernel reads each weight byte once for the whole
// batch, on workers that stay awake across the step's GEMVs (docs/performance.md).
#include <torch/extension.h>

#include "cpu_kernels.h"
#include "spin_pool.h"
#include "vec_math.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

using sgl_cpu::hsum;
using sgl_cpu::hsum4;
using sgl_cpu::kMaxBlocks;
using sgl_cpu::load16;
using sgl_cpu::v16;

struct Gemm {
  const float* x;
  int64_t x_stride;
  const float* w;  // [N, K] contiguous
  const float* bias;  // [N] or null
  float* y;  // [M, N] contiguous
  int64_t M, N, K, rows_per_block;
};

// rows [m0, m0 + MT) of x against rows [n0, n0 + R) of W; MT x R accumulators of 16 lanes
// (6 x 4 = 24 of the 32 AVX-512 registers, with 4 for W and 1 for x)
template <int MT, int R>
inline void tile(const Gemm& g, int64_t m0, int64_t n0) {
  v16 acc[MT][R];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = v16{};
  const int64_t K = g.K, K16 = K & ~int64_t(15);
  const float* x0 = g.x + m0 * g.x_stride;
  for (int64_t k = 0; k < K16; k += 16) {
    v16 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load16(g.w + (n0 + r) * K + k);
    for (int m = 0; m < MT; ++m) {
      const v16 xv = load16(x0 + m * g.x_stride + k);
      for (int r = 0; r < R; ++r) acc[m][r] += xv * wv[r];
    }
  }
  for (int m = 0; m < MT; ++m) {
    float sums[R];
    if constexpr (R == 4) {
      const v16 t = hsum4(acc[m][0], acc[m][1], acc[m][2], acc[m][3]);
      for (int r = 0; r < 4; ++r) sums[r] = t[4 * r];
    } else {
      for (int r = 0; r < R; ++r) sums[r] = hsum(acc[m][r]);
    }
    for (int r = 0; r < R; ++r) {
      float s = sums[r];
      for (int64_t k = K16; k < K; ++k) s += x0[m * g.x_stride + k] * g.w[(n0 + r) * K + k];
      if (g.bias) s += g.bias[n0 + r];
      g.y[(m0 + m) * g.N + n0 + r] = s;
    }
  }
}

constexpr int kTileRows = 6;

template <int R>
inline void x_rows(const Gemm& g, int64_t n) {
  // every row of x against R rows of W, which stay in L1 while the x tiles pass (x is in
  // L2). (The other order, an x tile against the block's W rows, measured slower.)
  int64_t m = 0;
  for (; m + kTileRows <= g.M; m += kTileRows) tile<kTileRows, R>(g, m, n);
  switch (g.M - m) {
    case 1: tile<1, R>(g, m, n); break;
    case 2: tile<2, R>(g, m, n); break;
    case 3: tile<3, R>(g, m, n); break;
    case 4: tile<4, R>(g, m, n); break;
    case 5: tile<5, R>(g, m, n); break;
    default: break;
  }
}

void gemm_block(const void* p, int64_t block) {
  const Gemm& g = *static_cast<const Gemm*>(p);
  const int64_t n0 = block * g.rows_per_block, n1 = std::min(g.N, n0 + g.rows_per_block);
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) x_rows<4>(g, n);
  for (; n < n1; ++n) x_rows<1>(g, n);
}

}  // namespace

// x [M, K] (rows may be strided), weight [N, K], bias [N] or None -> [M, N]; M <= 64
torch::Tensor small_linear(torch::Tensor x, torch::Tensor weight, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.stride(1) == 1,
              "x must be float32 [M, K] with contiguous rows");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.is_contiguous(),
              "weight must be contiguous float32 [N, K]");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "x has ", K, " columns, weight ", weight.size(1));
  TORCH_CHECK(M >= 1 && M <= kSmallGemmMaxRows, "small_linear takes 1..", kSmallGemmMaxRows, " rows, got ", M);
  const float* b = bias_data(bias, N);
  auto y = torch::empty({M, N}, x.options());
  // blocks of >= 64 weight rows (~150 KB at K=576): enough to share, few enough to claim cheaply
  const int64_t rows = std::max<int64_t>(64, (N + kMaxBlocks - 1) / static_cast<int64_t>(kMaxBlocks));
  Gemm g{x.data_ptr<float>(), x.stride(0), weight.data_ptr<float>(), b, y.data_ptr<float>(), M, N, K, rows};
  sgl_cpu::pool().run(gemm_block, &g, (N + rows - 1) / rows, reinterpret_cast<const char*>(g.w), N * K * 4);
  return y;
}
