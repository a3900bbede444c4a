// Softmax attention's core (scores, softmax, P·V) and its backward as XLA FFI handlers for CPU, fp32.
//
// Why: XLA:CPU runs attention's six batched dots per layer at 50-65 GFLOP/s (YNNPACK, or Eigen for the transposed
// ones) while the same shapes reach 100-120 through OpenBLAS; here each (batch, head) item is one in-cache unit of
// work: sgemm for the dots, the softmax in place on its [L, L] block, items spread over XLA's intra-op thread pool.
// Layouts: q, k heads-first [..., H, L, Dh]; v, out, d_out tokens-major [..., L, H, Dh] (read and written in place
// through the leading dimension, so the model needs no transposes); probs [..., H, L, L]. No mask (bidirectional).
// Built and registered by mdm_jax/cpu_attention.py; tests/mdm_jax/test_cpu_attention.py checks it against numpy.
#include <math.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "cblas.h"  // scipy-openblas32: the OpenBLAS build numpy and scipy ship, symbols prefixed scipy_
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shape {  // [..., H, L, Dh] read off a heads-first operand
  int64_t batch, heads, len, dh;
};

Shape HeadsFirst(const ffi::Buffer<ffi::F32>& x) {
  auto d = x.dimensions();
  int64_t r = d.size(), batch = 1;
  for (int64_t i = 0; i + 3 < r; ++i) batch *= d[i];
  return {batch, d[r - 3], d[r - 2], d[r - 1]};
}

// Runs body(item) for item in [0, n) on the caller and the pool. The caller alone can finish all items, so late
// pool tasks find nothing left and return without touching the buffers; the shared state outlives them.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t n;
    std::function<void(int64_t)> body;
    std::mutex mu;
    std::condition_variable cv;
    void Work() {
      for (int64_t i; (i = next.fetch_add(1)) < n;) {
        body(i);
        if (done.fetch_add(1) + 1 == n) {
          std::lock_guard<std::mutex> lock(mu);
          cv.notify_all();
        }
      }
    }
  };
  auto state = std::make_shared<State>();
  state->n = n;
  state->body = std::move(body);
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([state] { state->Work(); });
  state->Work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == n; });
}

void SoftmaxRows(float* s, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i, s += cols) {
    float m = s[0];
    for (int64_t j = 1; j < cols; ++j) m = std::max(m, s[j]);
    float sum = 0.f;
    for (int64_t j = 0; j < cols; ++j) {
      s[j] = expf(s[j] - m);  // vectorised through glibc's libmvec (built with -ffast-math)
      sum += s[j];
    }
    float inv = 1.f / sum;
    for (int64_t j = 0; j < cols; ++j) s[j] *= inv;
  }
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> probs) {
  Shape s = HeadsFirst(q);
  const int64_t L = s.len, D = s.dh, H = s.heads, ld = H * D;
  const float *q0 = q.typed_data(), *k0 = k.typed_data(), *v0 = v.typed_data();
  float *o0 = out->typed_data(), *p0 = probs->typed_data();
  ParallelFor(pool, s.batch * H, [=](int64_t item) {
    int64_t b = item / H, h = item % H;
    const float *qi = q0 + item * L * D, *ki = k0 + item * L * D, *vi = v0 + b * L * ld + h * D;
    float *pi = p0 + item * L * L, *oi = o0 + b * L * ld + h * D;
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, 1.f, qi, D, ki, D, 0.f, pi, L);
    SoftmaxRows(pi, L, L);
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, D, L, 1.f, pi, L, vi, ld, 0.f, oi, ld);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> probs, ffi::Buffer<ffi::F32> q,
                    ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> out,
                    ffi::Buffer<ffi::F32> d_out, ffi::ResultBuffer<ffi::F32> d_q, ffi::ResultBuffer<ffi::F32> d_k,
                    ffi::ResultBuffer<ffi::F32> d_v) {
  Shape s = HeadsFirst(q);
  const int64_t L = s.len, D = s.dh, H = s.heads, ld = H * D;
  const float *p0 = probs.typed_data(), *q0 = q.typed_data(), *k0 = k.typed_data(), *v0 = v.typed_data();
  const float *o0 = out.typed_data(), *do0 = d_out.typed_data();
  float *dq0 = d_q->typed_data(), *dk0 = d_k->typed_data(), *dv0 = d_v->typed_data();
  ParallelFor(pool, s.batch * H, [=](int64_t item) {
    thread_local std::vector<float> scratch;
    scratch.resize(L * L + L);
    float *ds = scratch.data(), *delta = ds + L * L;
    int64_t b = item / H, h = item % H, tok = b * L * ld + h * D;
    const float *pi = p0 + item * L * L, *qi = q0 + item * L * D, *ki = k0 + item * L * D;
    const float *vi = v0 + tok, *oi = o0 + tok, *doi = do0 + tok;
    float *dqi = dq0 + item * L * D, *dki = dk0 + item * L * D;
    // dV = Pᵀ·dO; dP = dO·Vᵀ
    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, D, L, 1.f, pi, L, doi, ld, 0.f, dv0 + tok, ld);
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, 1.f, doi, ld, vi, ld, 0.f, ds, L);
    // dS = P ⊙ (dP − δ), δ_i = Σ_d O·dO = Σ_j P·dP (FlashAttention's identity)
    for (int64_t i = 0; i < L; ++i) {
      float acc = 0.f;
      for (int64_t d = 0; d < D; ++d) acc += oi[i * ld + d] * doi[i * ld + d];
      delta[i] = acc;
    }
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < L; ++j) ds[i * L + j] = pi[i * L + j] * (ds[i * L + j] - delta[i]);
    // dQ = dS·K; dK = dSᵀ·Q
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, D, L, 1.f, ds, L, ki, D, 0.f, dqi, D);
    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, D, L, 1.f, ds, L, qi, D, 0.f, dki, D);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MdmAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MdmAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// OpenBLAS's own threads would compete with the pool: each sgemm here is one item's, on one core.
extern "C" void MdmAttentionInit() { scipy_openblas_set_num_threads(1); }
