// Fused elementwise ops of the decoder layer on CPU (float32), one pass over memory each
// and one call from Python instead of 5-10 small ATen ops:
//   rms_norm / add_rms_norm   (residual add + RMSNorm, transformers' op order)
//   rotary                    (neox / rotate-half RoPE of q and k from the cos/sin caches)
//   silu_and_mul              (silu(gate) * up of a merged gate_up row)
//   argmax_rows               (greedy sampling: first index of each row's maximum)
// Built with -ffp-contract=off so a*b + c is rounded like ATen's separate mul and add:
// rotary is then bit-identical to the torch expression it replaces. The norms' sum of
// squares and silu's exp differ from ATen's in the last bits only (tested against torch).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "vec_math.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using sgl_cpu::exp_poly;

// Rows per task: about a million elements (~0.2-1 ms of work), so decode batches run on the
// calling thread (waking torch's sleeping OpenMP thread costs ~0.1 ms under the passive wait,
// and the spin pool's workers may be spinning on the other core) and prefill chunks on all.
inline int64_t grain(int64_t per_row_work, int64_t elements = int64_t(1) << 20) {
  return std::max<int64_t>(1, elements / std::max<int64_t>(1, per_row_work));
}

void check_rows(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(x.dim() >= 1 && x.stride(-1) == 1, name, " must have a contiguous last dimension");
}

// out = weight * (r / sqrt(mean(r^2) + eps)) per row of r; r = x (+ residual, kept in res_out)
void norm_rows(const float* x, int64_t x_stride, const float* res, int64_t res_stride, float* res_out, float* out,
               const float* w, int64_t rows, int64_t H, float eps) {
  at::parallel_for(0, rows, grain(H), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xr = x + i * x_stride;
      float* o = out + i * H;
      const float* r = xr;
      if (res != nullptr) {
        const float* rr = res + i * res_stride;
        float* ro = res_out + i * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) ro[j] = xr[j] + rr[j];
        r = ro;
      }
      double ss = 0.0;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < H; ++j) ss += static_cast<double>(r[j]) * r[j];
      const float var = static_cast<float>(ss / static_cast<double>(H));
      const float inv = 1.0f / std::sqrt(var + eps);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) o[j] = w[j] * (r[j] * inv);
    }
  });
}

}  // namespace

// x [..., H] -> weight * x / rms(x)  (float32)
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  check_rows(x, "x");
  TORCH_CHECK(weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() && weight.dim() == 1, "bad weight");
  const int64_t H = x.size(-1);
  TORCH_CHECK(weight.numel() == H, "weight does not match the hidden size");
  auto x2 = x.reshape({-1, H});
  auto out = torch::empty({x2.size(0), H}, x.options());
  norm_rows(x2.data_ptr<float>(), x2.stride(0), nullptr, 0, nullptr, out.data_ptr<float>(),
            weight.data_ptr<float>(), x2.size(0), H, static_cast<float>(eps));
  return out.view(x.sizes());
}

// (weight * r / rms(r), r) with r = x + residual  (float32; new tensors, inputs untouched)
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight,
                                                       double eps) {
  check_rows(x, "x");
  check_rows(residual, "residual");
  TORCH_CHECK(x.sizes() == residual.sizes(), "x and residual differ in shape");
  TORCH_CHECK(weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() && weight.dim() == 1, "bad weight");
  const int64_t H = x.size(-1);
  TORCH_CHECK(weight.numel() == H, "weight does not match the hidden size");
  auto x2 = x.reshape({-1, H});
  auto r2 = residual.reshape({-1, H});
  auto out = torch::empty({x2.size(0), H}, x.options());
  auto res_out = torch::empty({x2.size(0), H}, x.options());
  norm_rows(x2.data_ptr<float>(), x2.stride(0), r2.data_ptr<float>(), r2.stride(0), res_out.data_ptr<float>(),
            out.data_ptr<float>(), weight.data_ptr<float>(), x2.size(0), H, static_cast<float>(eps));
  return {out.view(x.sizes()), res_out.view(x.sizes())};
}

// q [T, Hq, D], k [T, Hk, D] (any row stride, heads and dims dense); positions [T] int64;
// cos/sin caches [max_pos, D]. Returns new contiguous (q, k) rotated as
// x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1).
std::tuple<torch::Tensor, torch::Tensor> rotary(torch::Tensor positions, torch::Tensor q, torch::Tensor k,
                                                torch::Tensor cos_cache, torch::Tensor sin_cache) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(0) == k.size(0) && q.size(2) == k.size(2), "bad q/k shapes");
  TORCH_CHECK(q.scalar_type() == torch::kFloat32 && k.scalar_type() == torch::kFloat32, "q and k must be float32");
  TORCH_CHECK(q.stride(2) == 1 && q.stride(1) == q.size(2) && k.stride(2) == 1 && k.stride(1) == k.size(2),
              "q and k heads must be dense");
  TORCH_CHECK(cos_cache.scalar_type() == torch::kFloat32 && sin_cache.scalar_type() == torch::kFloat32 &&
                  cos_cache.is_contiguous() && sin_cache.is_contiguous() && cos_cache.size(1) == q.size(2),
              "bad cos/sin caches");
  const int64_t T = q.size(0), Hq = q.size(1), Hk = k.size(1), D = q.size(2), half = D / 2;
  TORCH_CHECK(D % 2 == 0, "head_dim must be even");
  auto pos = positions.to(torch::kInt64).contiguous();
  TORCH_CHECK(pos.numel() == T, "positions must have T entries");
  const int64_t max_pos = cos_cache.size(0);
  const int64_t* pp = pos.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) TORCH_CHECK(pp[t] >= 0 && pp[t] < max_pos, "position out of the rotary cache");
  auto qo = torch::empty({T, Hq, D}, q.options());
  auto ko = torch::empty({T, Hk, D}, k.options());
  const float *qs = q.data_ptr<float>(), *ks = k.data_ptr<float>();
  const float *cc = cos_cache.data_ptr<float>(), *sc = sin_cache.data_ptr<float>();
  float *qd = qo.data_ptr<float>(), *kd = ko.data_ptr<float>();
  const int64_t qst = q.stride(0), kst = k.stride(0);
  at::parallel_for(0, T, grain((Hq + Hk) * D), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* c = cc + pp[t] * D;
      const float* s = sc + pp[t] * D;
      for (int64_t which = 0; which < 2; ++which) {
        const int64_t H = which == 0 ? Hq : Hk;
        const float* src = which == 0 ? qs + t * qst : ks + t * kst;
        float* dst = which == 0 ? qd + t * Hq * D : kd + t * Hk * D;
        for (int64_t h = 0; h < H; ++h) {
          const float* x = src + h * D;
          float* y = dst + h * D;
#pragma omp simd
          for (int64_t j = 0; j < half; ++j) {
            const float a = x[j] * c[j];
            const float b = -x[j + half] * s[j];
            y[j] = a + b;
          }
#pragma omp simd
          for (int64_t j = half; j < D; ++j) {
            const float a = x[j] * c[j];
            const float b = x[j - half] * s[j];
            y[j] = a + b;
          }
        }
      }
    }
  });
  return {qo, ko};
}

// x [..., 2I] (gate | up) -> silu(gate) * up [..., I]
torch::Tensor silu_and_mul(torch::Tensor x) {
  check_rows(x, "x");
  const int64_t I2 = x.size(-1), I = I2 / 2;
  TORCH_CHECK(I2 % 2 == 0, "the last dimension must be even");
  auto x2 = x.reshape({-1, I2});
  const int64_t rows = x2.size(0), st = x2.stride(0);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = I;
  auto out = torch::empty(shape, x.options());
  const float* xs = x2.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows, grain(I), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* g = xs + i * st;
      const float* u = g + I;
      float* y = o + i * I;
#pragma omp simd
      for (int64_t j = 0; j < I; ++j) {
        const float z = std::min(std::max(-g[j], -87.0f), 88.0f);
        y[j] = g[j] / (1.0f + exp_poly(z)) * u[j];
      }
    }
  });
  return out;
}

// logits [B, V] float32 -> [B] int64: first index of each row's maximum (a NaN counts as
// the maximum, as in torch.argmax)
torch::Tensor argmax_rows(torch::Tensor logits) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32 && logits.stride(1) == 1,
              "logits must be float32 [B, V] with contiguous rows");
  const int64_t B = logits.size(0), V = logits.size(1), st = logits.stride(0);
  TORCH_CHECK(V > 0, "empty rows");
  auto out = torch::empty({B}, logits.options().dtype(torch::kInt64));
  const float* x = logits.data_ptr<float>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, B, grain(V, int64_t(1) << 22), [&](int64_t begin, int64_t end) {
    constexpr int64_t W = 16;
    for (int64_t b = begin; b < end; ++b) {
      const float* r = x + b * st;
      // pass 1: the maximum and whether the row holds a NaN (vectorized)
      float lanes[W];
      int32_t nans[W];
      for (int64_t l = 0; l < W; ++l) {
        lanes[l] = -std::numeric_limits<float>::infinity();
        nans[l] = 0;
      }
      int64_t j = 0;
      for (; j + W <= V; j += W) {
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) {
          const float v = r[j + l];
          lanes[l] = v > lanes[l] ? v : lanes[l];
          nans[l] |= v != v;
        }
      }
      float m = -std::numeric_limits<float>::infinity();
      bool nan = false;
      for (int64_t l = 0; l < W; ++l) {
        m = std::max(m, lanes[l]);
        nan = nan || nans[l];
      }
      for (; j < V; ++j) {
        m = std::max(m, r[j]);
        nan = nan || std::isnan(r[j]);
      }
      // pass 2: the first index holding the maximum (or the first NaN)
      int64_t idx = 0;
      for (int64_t i = 0; i < V; ++i) {
        if (nan ? std::isnan(r[i]) : r[i] == m) {
          idx = i;
          break;
        }
      }
      o[b] = idx;
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm", &rms_norm, "RMSNorm of float32 rows");
  m.def("add_rms_norm", &add_rms_norm, "residual add + RMSNorm of float32 rows: (normed, sum)");
  m.def("rotary", &rotary, "neox RoPE of q and k (new contiguous tensors)");
  m.def("silu_and_mul", &silu_and_mul, "silu(gate) * up of merged float32 rows");
  m.def("argmax_rows", &argmax_rows, "first index of each row's maximum (float32)");
}
