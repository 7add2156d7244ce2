// y = x W^T (+ b), float32, with W packed once (at model load) into K-major panels: panel p
// holds output columns [48p, 48p + 48) as [K, 48], zero-padded past N.
//
// Why: at decode batches of 16-64 rows a step's GEMMs are neither bandwidth- nor
// compute-bound alone (SmolLM2 at 32 rows: the 425 MB of layer weights take ~15 ms to read,
// the 6.8 GFLOP ~15 ms at the two cores' float32 peak), and oneDNN's prepacked GEMM ran
// them in 37 ms with its threads awake (44-51 ms with the passive wait). Here each step of k
// loads three vectors of one panel row and broadcasts one x value per row of an 8-row tile:
// 24 independent FMAs from 11 loads, no horizontal sums, so a warm panel runs at the FMA
// peak; while the tiles pass over one panel (from L2), the next panel is prefetched into L2
// at the rate the tiles consume it, so the DRAM stream and the FMAs overlap.
// Each output is sum_k x[m, k] * W[n, k] in k order from the bias: the same bits whatever the
// batch (M), the row's place in it or the thread that computes it.
#include <torch/extension.h>

#include "cpu_kernels.h"
#include "spin_pool.h"
#include "vec_math.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

// GCC vector extensions (vec_math.h) rather than intrinsics: AVX-512 registers with
// -march=native on this project's CPUs, and still a correct build elsewhere
using sgl_cpu::load16;
using sgl_cpu::v16;

constexpr int kVecs = kPanelCols / 16;  // AVX-512 vectors per panel row
constexpr int kTileRows = 8;  // 8 x 3 = 24 accumulators of the 32 registers, 3 for the panel row, 1 for x
// rows of x per m-block: x's block (<= ~1 MB) stays in L2 while the panels pass
constexpr int64_t kXBlockBytes = int64_t(1) << 20;

struct PackedGemm {
  const float* x;
  int64_t x_stride;
  const float* panels;  // [P, K, kPanelCols]
  const float* bias;  // [N] or null
  float* y;  // [M, N]
  int64_t M, N, K, P;
  int64_t mblock_rows, groups, group;  // block b: m-block b / groups, panels of group b % groups
  int64_t threads;  // of the pool
  int pf_lines;  // cache lines of the next panel to prefetch per step of k
};

// rows [0, MR) of x against one panel; columns [0, ncols) of y are written
template <int MR>
inline void tile(const PackedGemm& g, const float* x, const float* panel, const v16* bias, float* y, int64_t ncols,
                 const char*& pf, const char* pf_end) {
  v16 acc[MR][kVecs];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[m][v] = bias[v];
  const int64_t K = g.K, xs = g.x_stride;
  for (int64_t k = 0; k < K; ++k) {
    if (pf < pf_end) {  // spread over the tiles: the next panel arrives as this one is done
      for (int l = 0; l < g.pf_lines; ++l) __builtin_prefetch(pf + 64 * l, 0, 2);  // into L2
      pf += 64 * g.pf_lines;
    }
    const float* p = panel + k * kPanelCols;
    v16 w[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) w[v] = load16(p + 16 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const float xv = x[m * xs + k];  // broadcast: a fused multiply-add per vector
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[m][v] += xv * w[v];
    }
  }
  for (int m = 0; m < MR; ++m) {
    if (ncols == kPanelCols) {
      std::memcpy(y + m * g.N, acc[m], sizeof(acc[m]));
    } else {
      float row[kPanelCols];
      std::memcpy(row, acc[m], sizeof(row));
      std::memcpy(y + m * g.N, row, ncols * sizeof(float));
    }
  }
}

void packed_block(const void* ctx, int64_t b) {
  const PackedGemm& g = *static_cast<const PackedGemm*>(ctx);
  const int64_t m0 = (b / g.groups) * g.mblock_rows, m1 = std::min(g.M, m0 + g.mblock_rows);
  const int64_t p0 = (b % g.groups) * g.group, p1 = std::min(g.P, p0 + g.group);
  const int64_t panel_floats = g.K * kPanelCols;
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = g.panels + p * panel_floats;
    const int64_t c0 = p * kPanelCols, ncols = std::min<int64_t>(kPanelCols, g.N - c0);
    float b[kPanelCols] = {};
    if (g.bias) std::memcpy(b, g.bias + c0, ncols * sizeof(float));
    v16 bias[kVecs];
    for (int v = 0; v < kVecs; ++v) bias[v] = load16(b + 16 * v);
    // prefetch the next panel of the group; after the last, the first panel of the group
    // this thread will likely claim next (claims alternate between threads of equal speed)
    const int64_t next = p + 1 < p1 ? p + 1 : p1 + (g.threads - 1) * g.group;
    const char* pf = next < g.P ? reinterpret_cast<const char*>(g.panels + next * panel_floats) : nullptr;
    const char* pf_end = pf ? pf + panel_floats * 4 : nullptr;
    const float* x = g.x + m0 * g.x_stride;
    float* y = g.y + m0 * g.N + c0;
    int64_t m = m0;
    for (; m + kTileRows <= m1; m += kTileRows, x += kTileRows * g.x_stride, y += kTileRows * g.N)
      tile<kTileRows>(g, x, panel, bias, y, ncols, pf, pf_end);
    switch (m1 - m) {
      case 1: tile<1>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      case 2: tile<2>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      case 3: tile<3>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      case 4: tile<4>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      case 5: tile<5>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      case 6: tile<6>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      case 7: tile<7>(g, x, panel, bias, y, ncols, pf, pf_end); break;
      default: break;
    }
  }
}

}  // namespace

torch::Tensor pack_panels(torch::Tensor weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.device().is_cpu(),
              "weight must be a float32 CPU matrix [N, K]");
  TORCH_CHECK(weight.size(0) >= 1 && weight.size(1) >= 1, "weight must not be empty");
  const auto w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1), P = (N + kPanelCols - 1) / kPanelCols;
  auto out = torch::zeros({P, K, kPanelCols}, w.options());
  const float* src = w.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, P, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      for (int64_t c = 0; c < kPanelCols && p * kPanelCols + c < N; ++c) {
        const float* row = src + (p * kPanelCols + c) * K;
        float* col = dst + p * K * kPanelCols + c;
        for (int64_t k = 0; k < K; ++k) col[k * kPanelCols] = row[k];
      }
  });
  return out;
}

// x [M, K] (rows may be strided), panels from pack_panels of a weight [n, K], bias [n] or None -> [M, n]
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor panels, int64_t n, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu() && x.stride(1) == 1,
              "x must be float32 [M, K] on CPU with contiguous rows");
  TORCH_CHECK(panels.dim() == 3 && panels.scalar_type() == torch::kFloat32 && panels.is_contiguous() &&
                  panels.size(2) == kPanelCols,
              "panels must be the contiguous float32 [P, K, ", kPanelCols, "] of pack_panels");
  const int64_t M = x.size(0), K = x.size(1), P = panels.size(0);
  TORCH_CHECK(panels.size(1) == K, "x has ", K, " columns, the packed weight ", panels.size(1));
  TORCH_CHECK(n > (P - 1) * kPanelCols && n <= P * kPanelCols, "n = ", n, " does not fit ", P, " panels");
  const float* b = bias_data(bias, n);
  auto y = torch::empty({M, n}, x.options());
  if (M == 0) return y;
  sgl_cpu::SpinPool& pool = sgl_cpu::pool();
  const int64_t mblock_rows = std::max<int64_t>(kTileRows, kXBlockBytes / (K * 4) / kTileRows * kTileRows);
  const int64_t mblocks = (M + mblock_rows - 1) / mblock_rows;
  // groups of panels: about 8 claims per thread per m-block (balance: a descheduled thread's
  // share goes to the others), each up to 16 panels long
  const int64_t group = std::clamp<int64_t>(P / (8 * pool.threads()), 1, 16);
  const int64_t groups = (P + group - 1) / group;
  TORCH_CHECK(mblocks * groups <= static_cast<int64_t>(sgl_cpu::kMaxBlocks), "x has too many rows for one call");
  const int64_t tiles = (std::min(M, mblock_rows) + kTileRows - 1) / kTileRows;
  const int64_t lines = K * kPanelCols * 4 / 64;
  const int pf_lines = static_cast<int>((lines + tiles * K - 1) / (tiles * K));
  PackedGemm g{x.data_ptr<float>(), x.stride(0), panels.data_ptr<float>(), b, y.data_ptr<float>(), M, n, K, P,
               mblock_rows, groups, group, pool.threads(), pf_lines};
  pool.run(packed_block, &g, mblocks * groups, reinterpret_cast<const char*>(g.panels), P * K * kPanelCols * 4);
  return y;
}
