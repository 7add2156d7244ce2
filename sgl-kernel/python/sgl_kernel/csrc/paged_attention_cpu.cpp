// Attention over the paged KV cache on CPU (float32), reading each key and value row straight
// from the pool (slot from req_to_token), without gathering the keys:
//   decode_attention  one query per request: one task per (request, KV head); pass 1 scores
//                     the G query heads of the group against each key row, pass 2 reads each
//                     value row once and accumulates the softmax-weighted sum
//   extend_attention  a prefill chunk (causal, after a cached prefix): one task per (request,
//                     KV head, block of 16 query rows), the block's rows scored together
//                     against each key row
// A padded gather + SDPA reads the keys twice and writes a padded copy; these read K and V
// once per task. Tasks run on the spin pool shared with the GEMMs (spin_pool.h).
#include <torch/extension.h>

#include "cpu_kernels.h"
#include "spin_pool.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// exp(x) for x <= 0 (scores minus their maximum), 0 below -87 (vec_math.h's polynomial)
inline float exp_nonpos(float x) { return sgl_cpu::exp_poly(x < -87.0f ? -87.0f : x); }

using sgl_cpu::hsum4;
using sgl_cpu::load16;
using sgl_cpu::v16;

// Key and value rows are scattered over the pool (one slot per token): prefetch a few ahead.
constexpr int64_t kAhead = 8;

inline void prefetch_row(const float* row, int64_t D) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t c = 0; c < D * 4; c += 64) __builtin_prefetch(p + c);
}

// scores[g * L + j] = scale * q_g . k_j for the G query heads of one KV head (qh [G, D]);
// k row j at kh + slots[j] * stride. D = 16 * DV: four keys at a time, each dot product in
// DV vector FMAs per head and the four sums in one shuffle tree (a key at a time, a dot
// product of 64 was a chain of dependent adds: 10x slower than the K bytes it reads).
template <int DV, typename idx_t>
void scores_vec(const float* qh, const float* kh, const idx_t* slots, int64_t L, int64_t G, int64_t stride,
                float scale, float* scores) {
  constexpr int64_t D = 16 * DV;
  for (int64_t j = 0; j < L; j += 4) {
    const int64_t n = std::min<int64_t>(4, L - j);
    for (int64_t i = 0; i < 4 && j + kAhead + i < L; ++i)
      prefetch_row(kh + static_cast<int64_t>(slots[j + kAhead + i]) * stride, D);
    const float* kr[4];
    for (int64_t i = 0; i < 4; ++i) kr[i] = kh + static_cast<int64_t>(slots[j + std::min(i, n - 1)]) * stride;
    for (int64_t g = 0; g < G; ++g) {
      const float* qg = qh + g * D;
      v16 a[4] = {};
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) {
        const v16 qv = load16(qg + 16 * c);
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) a[i] += qv * load16(kr[i] + 16 * c);
      }
      const v16 t = hsum4(a[0], a[1], a[2], a[3]);
      for (int64_t i = 0; i < n; ++i) scores[g * L + j + i] = t[4 * i] * scale;
    }
  }
}

template <typename idx_t>
void scores_any(const float* qh, const float* kh, const idx_t* slots, int64_t L, int64_t G, int64_t D, int64_t stride,
                float scale, float* scores) {
  for (int64_t j = 0; j < L; ++j) {
    if (j + kAhead < L) prefetch_row(kh + static_cast<int64_t>(slots[j + kAhead]) * stride, D);
    const float* kr = kh + static_cast<int64_t>(slots[j]) * stride;
    for (int64_t g = 0; g < G; ++g) {
      const float* qg = qh + g * D;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += qg[d] * kr[d];
      scores[g * L + j] = s * scale;
    }
  }
}

// oh[g] = sum_j p[g * L + j] v_j for the G heads: the outputs of up to 16 / DV heads stay in
// registers while the value rows pass (each row read once per block of heads).
template <int DV, typename idx_t>
void values_vec(const float* p, const float* vh, const idx_t* slots, int64_t L, int64_t G, int64_t stride, float* oh) {
  constexpr int64_t D = 16 * DV;
  constexpr int GB = DV >= 16 ? 1 : 16 / DV;
  for (int64_t g0 = 0; g0 < G; g0 += GB) {
    const int64_t gb = std::min<int64_t>(GB, G - g0);
    v16 acc[GB][DV] = {};
    for (int64_t j = 0; j < L; ++j) {
      if (j + kAhead < L) prefetch_row(vh + static_cast<int64_t>(slots[j + kAhead]) * stride, D);
      const float* vr = vh + static_cast<int64_t>(slots[j]) * stride;
      v16 vv[DV];
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) vv[c] = load16(vr + 16 * c);
#pragma GCC unroll 4
      for (int g = 0; g < GB; ++g) {
        if (g >= gb) break;
        const float pj = p[(g0 + g) * L + j];
#pragma GCC unroll 8
        for (int c = 0; c < DV; ++c) acc[g][c] += pj * vv[c];
      }
    }
    for (int64_t g = 0; g < gb; ++g) std::memcpy(oh + (g0 + g) * D, acc[g], sizeof(acc[g]));
  }
}

template <typename idx_t>
void values_any(const float* p, const float* vh, const idx_t* slots, int64_t L, int64_t G, int64_t D, int64_t stride,
                float* oh) {
  std::fill(oh, oh + G * D, 0.f);
  for (int64_t j = 0; j < L; ++j) {
    if (j + kAhead < L) prefetch_row(vh + static_cast<int64_t>(slots[j + kAhead]) * stride, D);
    const float* vr = vh + static_cast<int64_t>(slots[j]) * stride;
    for (int64_t g = 0; g < G; ++g) {
      const float pj = p[g * L + j];
      float* og = oh + g * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) og[d] += pj * vr[d];
    }
  }
}

// Softmax of s[0, n) in place (s[n, n_pad) set to 0): returns the max m, sum_j e_j and
// sum_j e_j (s_j - m), e_j = exp(s_j - m); so lse = m + log(sum) and the entropy
// -sum p log p = log(sum) - es / sum (no log per key).
struct RowSoftmax {
  float m, sum, es;
};

inline RowSoftmax softmax_row(float* s, int64_t n, int64_t n_pad) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
  float sum = 0.f, es = 0.f;
#pragma omp simd reduction(+ : sum, es)
  for (int64_t j = 0; j < n; ++j) {
    const float z = s[j] - m;
    const float e = exp_nonpos(z);
    es += e * z;
    s[j] = e;
    sum += e;
  }
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
  std::fill(s + n, s + n_pad, 0.f);
  return {m, sum, es};
}

template <typename idx_t>
void scores_dispatch(const float* qh, const float* kh, const idx_t* slots, int64_t L, int64_t rows, int64_t D,
                     int64_t stride, float scale, float* scores) {
  if (D == 64) {
    scores_vec<4>(qh, kh, slots, L, rows, stride, scale, scores);
  } else if (D == 128) {
    scores_vec<8>(qh, kh, slots, L, rows, stride, scale, scores);
  } else {
    scores_any(qh, kh, slots, L, rows, D, stride, scale, scores);
  }
}

template <typename idx_t>
void values_dispatch(const float* p, const float* vh, const idx_t* slots, int64_t L, int64_t rows, int64_t D,
                     int64_t stride, float* oh) {
  if (D == 64) {
    values_vec<4>(p, vh, slots, L, rows, stride, oh);
  } else if (D == 128) {
    values_vec<8>(p, vh, slots, L, rows, stride, oh);
  } else {
    values_any(p, vh, slots, L, rows, D, stride, oh);
  }
}

// Runs body(begin, end) over tasks [0, n) on the spin pool, ``grain`` tasks per block.
template <typename F>
void run_tasks(const F& body, int64_t n, int64_t grain) {
  grain = std::max(grain, (n + static_cast<int64_t>(sgl_cpu::kMaxBlocks) - 1) / static_cast<int64_t>(sgl_cpu::kMaxBlocks));
  struct Job {
    const F* fn;
    int64_t grain, tasks;
  } job{&body, std::max<int64_t>(grain, 1), n};
  sgl_cpu::pool().run(
      [](const void* ctx, int64_t block) {
        const Job& j = *static_cast<const Job*>(ctx);
        (*j.fn)(block * j.grain, std::min(j.tasks, (block + 1) * j.grain));
      },
      &job, (n + job.grain - 1) / job.grain);
}

template <typename idx_t>
void run(const float* q, const float* k, const float* v, const idx_t* table, int64_t table_stride,
         const int64_t* req_rows, const int64_t* seq_lens, float* out, float* lse, int64_t B, int64_t Hq,
         int64_t Hkv, int64_t D, int64_t pool_stride, float scale, const int64_t* mask_prefix, float* hist,
         float* masked, float* entropy) {
  const int64_t G = Hq / Hkv;
  // Tasks (request, KV head) go to the spin pool in blocks of about 32k multiply-adds: its
  // workers are awake from the step's GEMMs, so even batch 1 shares out (an OpenMP region
  // here paid a wake-up per layer, and its threads competed with the pool's spinning ones).
  int64_t keys = 0;
  for (int64_t b = 0; b < B; ++b) keys += seq_lens[b];
  const int64_t per_task = std::max<int64_t>(1, keys * G * D / std::max<int64_t>(1, B));
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / per_task);
  const auto body = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      {
        const int64_t b = task / Hkv, h = task % Hkv;
        const int64_t L = seq_lens[b];
        const idx_t* slots = table + req_rows[b] * table_stride;
        scores.resize(static_cast<size_t>(G * L));
        const float* qh = q + (b * Hq + h * G) * D;
        scores_dispatch(qh, k + h * D, slots, L, G, D, pool_stride, scale, scores.data());
        for (int64_t g = 0; g < G; ++g) {
          const RowSoftmax r = softmax_row(scores.data() + g * L, L, L);
          const float head_lse = r.m + std::log(r.sum);
          if (lse != nullptr) lse[b * Hq + h * G + g] = head_lse;
          // -sum p log p = lse - sum p s = log(sum) - sum p (s - m): no log per key
          if (entropy != nullptr) entropy[b * Hq + h * G + g] = std::max(std::log(r.sum) - r.es / r.sum, 0.f);
        }
        if (hist != nullptr) {
          // Capture statistics of this task's G heads, summed over the heads (the caller
          // adds the KV groups and divides by Hq): distance histogram of unmasked keys and
          // masked mass (the entropy -sum p log p is written per query head above). Bin of
          // distance d: 0 for d < 2, else floor(log2 d) capped at 15 (sgl_kernel.zones).
          float* hb = hist + (b * Hkv + h) * 16;
          float mass = 0.f;
          const int64_t t = L - 1, mp = mask_prefix[b];
          for (int64_t j = 0; j < L; ++j) {
            float p = 0.f;
            for (int64_t g = 0; g < G; ++g) p += scores[g * L + j];
            if (j < mp) {
              mass += p;
            } else {
              const uint64_t d = static_cast<uint64_t>(t - j);
              const int bin = d < 2 ? 0 : std::min(15, 63 - __builtin_clzll(d));
              hb[bin] += p;
            }
          }
          masked[b * Hkv + h] = mass;
        }
        float* oh = out + (b * Hq + h * G) * D;
        values_dispatch(scores.data(), v + h * D, slots, L, G, D, pool_stride, oh);
      }
    }
  };
  run_tasks(body, B * Hkv, grain);
}

// Query rows of a prefill task: scored together against each key row (the K tile is loaded
// once per four keys for all of them), at most this many keys wasted above the diagonal.
constexpr int64_t kExtendRows = 16;

struct ExtendTask {
  int64_t b, h, i0;  // request, KV head, first query row of the block (within the extend)
};

template <typename idx_t>
void run_extend(const float* q, const float* k, const float* v, const idx_t* table, int64_t table_stride,
                const int64_t* req_rows, const int64_t* prefix, const int64_t* ext, const int64_t* start, float* out,
                float* lse, int64_t B, int64_t Hq, int64_t Hkv, int64_t D, int64_t pool_stride, float scale) {
  const int64_t G = Hq / Hkv;
  std::vector<ExtendTask> tasks;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i0 = 0; i0 < ext[b]; i0 += kExtendRows)
      for (int64_t h = 0; h < Hkv; ++h) tasks.push_back({b, h, i0});
  // the longest blocks first: the pool's claims then end on short ones (balance)
  std::stable_sort(tasks.begin(), tasks.end(), [&](const ExtendTask& a, const ExtendTask& c) {
    return prefix[a.b] + a.i0 > prefix[c.b] + c.i0;
  });
  const auto body = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores, qbuf, obuf;
    for (int64_t ti = begin; ti < end; ++ti) {
      const ExtendTask& tk = tasks[ti];
      const int64_t n_rows = std::min(kExtendRows, ext[tk.b] - tk.i0), rows = n_rows * G;
      const int64_t t0 = prefix[tk.b] + tk.i0, L = t0 + n_rows;  // row r attends keys 0..t0 + r
      const idx_t* slots = table + req_rows[tk.b] * table_stride;
      qbuf.resize(static_cast<size_t>(rows * D));
      obuf.resize(static_cast<size_t>(rows * D));
      scores.resize(static_cast<size_t>(rows * L));
      const int64_t tok0 = start[tk.b] + tk.i0;
      for (int64_t r = 0; r < n_rows; ++r)  // the block's rows of this KV head's G query heads
        std::memcpy(qbuf.data() + r * G * D, q + ((tok0 + r) * Hq + tk.h * G) * D, G * D * sizeof(float));
      scores_dispatch(qbuf.data(), k + tk.h * D, slots, L, rows, D, pool_stride, scale, scores.data());
      for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t g = 0; g < G; ++g) {
          const RowSoftmax sm = softmax_row(scores.data() + (r * G + g) * L, t0 + r + 1, L);
          lse[(tok0 + r) * Hq + tk.h * G + g] = sm.m + std::log(sm.sum);
        }
      values_dispatch(scores.data(), v + tk.h * D, slots, L, rows, D, pool_stride, obuf.data());
      for (int64_t r = 0; r < n_rows; ++r)
        std::memcpy(out + ((tok0 + r) * Hq + tk.h * G) * D, obuf.data() + r * G * D, G * D * sizeof(float));
    }
  };
  run_tasks(body, static_cast<int64_t>(tasks.size()), 1);
}

}  // namespace

// q [B, Hq, D] float32; k_buffer, v_buffer [slots, Hkv, D] float32 (contiguous);
// req_to_token [R, max_ctx] int32/int64; req_rows, seq_lens [B] int64.
// Returns (out [B, Hq, D], lse [B, Hq]).
std::vector<torch::Tensor> decode_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                                            torch::Tensor req_to_token, torch::Tensor req_rows,
                                            torch::Tensor seq_lens, double scale,
                                            c10::optional<torch::Tensor> mask_prefix,
                                            c10::optional<torch::Tensor> k_new, c10::optional<torch::Tensor> v_new,
                                            c10::optional<torch::Tensor> loc) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == torch::kFloat32, "q must be float32 [B, Hq, D]");
  TORCH_CHECK(k_buffer.scalar_type() == torch::kFloat32 && v_buffer.scalar_type() == torch::kFloat32,
              "the KV buffers must be float32");
  TORCH_CHECK(k_buffer.is_contiguous() && v_buffer.is_contiguous(), "the KV buffers must be contiguous");
  TORCH_CHECK(req_to_token.dim() == 2 && req_to_token.stride(1) == 1, "req_to_token must be [R, max_ctx]");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k_buffer.size(1);
  TORCH_CHECK(k_buffer.size(2) == D && Hq % Hkv == 0, "head shapes do not match");
  auto qc = q.contiguous();
  auto rows = req_rows.to(torch::kInt64).contiguous();
  auto lens = seq_lens.to(torch::kInt64).contiguous();
  TORCH_CHECK(rows.numel() == B && lens.numel() == B, "req_rows and seq_lens must have B entries");
  {  // bounds, on the host arrays (no tensor reductions: this runs once per layer)
    const int64_t *lp = lens.data_ptr<int64_t>(), *rp = rows.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(lp[b] >= 1 && lp[b] <= req_to_token.size(1), "seq_lens must be in [1, max_ctx]");
      TORCH_CHECK(rp[b] >= 0 && rp[b] < req_to_token.size(0), "req_rows must index req_to_token");
    }
  }
  const int64_t pool_stride = Hkv * D;
  if (k_new.has_value()) {
    // the new tokens' K and V go into their slots first (one call instead of two row
    // copies per layer in Python; upstream's CPU decode kernel takes them the same way)
    TORCH_CHECK(v_new.has_value() && loc.has_value(), "k_new needs v_new and loc");
    const auto &kn = *k_new, &vn = *v_new;
    for (const auto* t : {&kn, &vn}) {
      TORCH_CHECK(t->dim() == 3 && t->size(0) == B && t->size(1) == Hkv && t->size(2) == D &&
                      t->scalar_type() == torch::kFloat32 && t->stride(2) == 1 && t->stride(1) == D,
                  "k_new and v_new must be float32 [B, Hkv, D] with dense heads");
    }
    auto lc = loc->to(torch::kInt64).contiguous();
    TORCH_CHECK(lc.numel() == B, "loc must have B entries");
    const int64_t* lp = lc.data_ptr<int64_t>();
    const int64_t slots = k_buffer.size(0);
    float *kb = k_buffer.data_ptr<float>(), *vb = v_buffer.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {  // all checked before any row is written
      TORCH_CHECK(lp[b] >= 0 && lp[b] < slots, "loc must index the KV buffers");
    }
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(kb + lp[b] * pool_stride, kn.data_ptr<float>() + b * kn.stride(0), pool_stride * sizeof(float));
      std::memcpy(vb + lp[b] * pool_stride, vn.data_ptr<float>() + b * vn.stride(0), pool_stride * sizeof(float));
    }
  }
  auto out = torch::empty_like(qc);
  auto lse = torch::empty({B, Hq}, q.options());
  // With mask_prefix [B]: also the per-(row, KV group) capture partial sums (hist [B, Hkv, 16],
  // masked [B, Hkv]) and each query head's entropy [B, Hq].
  torch::Tensor mp, hist, masked, entropy;
  const int64_t* mp_ptr = nullptr;
  float *hist_ptr = nullptr, *masked_ptr = nullptr, *ent_ptr = nullptr;
  if (mask_prefix.has_value()) {
    mp = mask_prefix->to(torch::kInt64).contiguous();
    TORCH_CHECK(mp.numel() == B, "mask_prefix must have B entries");
    hist = torch::zeros({B, Hkv, 16}, q.options());
    masked = torch::empty({B, Hkv}, q.options());
    entropy = torch::empty({B, Hq}, q.options());
    mp_ptr = mp.data_ptr<int64_t>();
    hist_ptr = hist.data_ptr<float>();
    masked_ptr = masked.data_ptr<float>();
    ent_ptr = entropy.data_ptr<float>();
  }
  if (req_to_token.scalar_type() == torch::kInt32) {
    run<int32_t>(qc.data_ptr<float>(), k_buffer.data_ptr<float>(), v_buffer.data_ptr<float>(),
                 req_to_token.data_ptr<int32_t>(), req_to_token.stride(0), rows.data_ptr<int64_t>(),
                 lens.data_ptr<int64_t>(), out.data_ptr<float>(), lse.data_ptr<float>(), B, Hq, Hkv, D, pool_stride,
                 static_cast<float>(scale), mp_ptr, hist_ptr, masked_ptr, ent_ptr);
  } else {
    TORCH_CHECK(req_to_token.scalar_type() == torch::kInt64, "req_to_token must be int32 or int64");
    run<int64_t>(qc.data_ptr<float>(), k_buffer.data_ptr<float>(), v_buffer.data_ptr<float>(),
                 req_to_token.data_ptr<int64_t>(), req_to_token.stride(0), rows.data_ptr<int64_t>(),
                 lens.data_ptr<int64_t>(), out.data_ptr<float>(), lse.data_ptr<float>(), B, Hq, Hkv, D, pool_stride,
                 static_cast<float>(scale), mp_ptr, hist_ptr, masked_ptr, ent_ptr);
  }
  if (mask_prefix.has_value()) return {out, lse, hist, masked, entropy};
  return {out, lse};
}


// q [T, Hq, D] float32, the rows of each request's extend in batch order; k_buffer, v_buffer
// [slots, Hkv, D] float32 (contiguous), holding every key of the prefix and of the extend;
// req_to_token [R, max_ctx] int32/int64; req_rows, prefix_lens, extend_lens [B] int64.
// Row i of request b (position prefix + i) attends keys 0..prefix + i.
// Returns (out [T, Hq, D], lse [T, Hq]).
std::vector<torch::Tensor> extend_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                                            torch::Tensor req_to_token, torch::Tensor req_rows,
                                            torch::Tensor prefix_lens, torch::Tensor extend_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == torch::kFloat32, "q must be float32 [T, Hq, D]");
  TORCH_CHECK(k_buffer.scalar_type() == torch::kFloat32 && v_buffer.scalar_type() == torch::kFloat32,
              "the KV buffers must be float32");
  TORCH_CHECK(k_buffer.is_contiguous() && v_buffer.is_contiguous() && k_buffer.sizes() == v_buffer.sizes(),
              "the KV buffers must be contiguous and of one shape");
  TORCH_CHECK(req_to_token.dim() == 2 && req_to_token.stride(1) == 1, "req_to_token must be [R, max_ctx]");
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k_buffer.size(1);
  TORCH_CHECK(k_buffer.dim() == 3 && k_buffer.size(2) == D && Hq % Hkv == 0, "head shapes do not match");
  auto qc = q.contiguous();
  auto rows = req_rows.to(torch::kInt64).contiguous();
  auto pre = prefix_lens.to(torch::kInt64).contiguous();
  auto ext = extend_lens.to(torch::kInt64).contiguous();
  const int64_t B = rows.numel();
  TORCH_CHECK(pre.numel() == B && ext.numel() == B, "req_rows, prefix_lens and extend_lens must have B entries");
  std::vector<int64_t> start(static_cast<size_t>(B));
  {  // bounds, on the host arrays; every slot read must index the pool
    const int64_t *rp = rows.data_ptr<int64_t>(), *pp = pre.data_ptr<int64_t>(), *ep = ext.data_ptr<int64_t>();
    int64_t total = 0;
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(rp[b] >= 0 && rp[b] < req_to_token.size(0), "req_rows must index req_to_token");
      TORCH_CHECK(pp[b] >= 0 && ep[b] >= 0 && pp[b] + ep[b] <= req_to_token.size(1),
                  "prefix_lens + extend_lens must be in [0, max_ctx]");
      start[static_cast<size_t>(b)] = total;
      total += ep[b];
    }
    TORCH_CHECK(total == T, "extend_lens sum to ", total, ", q has ", T, " rows");
    const int64_t slots = k_buffer.size(0);
    const auto check_slots = [&](const auto* table) {
      for (int64_t b = 0; b < B; ++b) {
        const auto* row = table + rp[b] * req_to_token.stride(0);
        for (int64_t j = 0; j < pp[b] + ep[b]; ++j)
          TORCH_CHECK(row[j] >= 0 && row[j] < slots, "req_to_token holds a slot outside the KV buffers");
      }
    };
    if (req_to_token.scalar_type() == torch::kInt32) check_slots(req_to_token.data_ptr<int32_t>());
    else check_slots(req_to_token.data_ptr<int64_t>());
  }
  auto out = torch::empty_like(qc);
  auto lse = torch::empty({T, Hq}, q.options());
  if (T == 0) return {out, lse};
  const int64_t pool_stride = Hkv * D;
  if (req_to_token.scalar_type() == torch::kInt32) {
    run_extend<int32_t>(qc.data_ptr<float>(), k_buffer.data_ptr<float>(), v_buffer.data_ptr<float>(),
                        req_to_token.data_ptr<int32_t>(), req_to_token.stride(0), rows.data_ptr<int64_t>(),
                        pre.data_ptr<int64_t>(), ext.data_ptr<int64_t>(), start.data(), out.data_ptr<float>(),
                        lse.data_ptr<float>(), B, Hq, Hkv, D, pool_stride, static_cast<float>(scale));
  } else {
    TORCH_CHECK(req_to_token.scalar_type() == torch::kInt64, "req_to_token must be int32 or int64");
    run_extend<int64_t>(qc.data_ptr<float>(), k_buffer.data_ptr<float>(), v_buffer.data_ptr<float>(),
                        req_to_token.data_ptr<int64_t>(), req_to_token.stride(0), rows.data_ptr<int64_t>(),
                        pre.data_ptr<int64_t>(), ext.data_ptr<int64_t>(), start.data(), out.data_ptr<float>(),
                        lse.data_ptr<float>(), B, Hq, Hkv, D, pool_stride, static_cast<float>(scale));
  }
  return {out, lse};
}
