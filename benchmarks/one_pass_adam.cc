// One-pass Adam kernels for XLA:CPU, called through jax.ffi by benchmarks/one_pass.py.
//
// An experiment, not part of the library: it measures how far a hand-written single loop gets
// against XLA's three loops and torch's fused Adam (see BUILD_NOTES.md, "Why XLA's CPU loop for
// one big leaf is slower than torch's fused kernel").
//
//   gc_adam_params:  (p, g, m, v, h) -> (p', m', v')   reads 16 B, writes 12 B per parameter
//   gc_adam_updates: (g, m, v, h)    -> (u, m', v')    the GradientTransformation form: the
//                                                       caller still applies p + u
//
// h = [lr / (1 - b1^t), 1 / sqrt(1 - b2^t), b1, b2, eps], so that
//   m' = b1 m + (1 - b1) g,   v' = b2 v + (1 - b2) g^2,   u = -h0 m' / (sqrt(v') h1 + eps).
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

// Runs body(lo, hi) over [0, n) split across XLA's intra-op threads and the calling thread.
template <typename Body>
static void ParallelFor(ffi::ThreadPool& pool, int64_t n, Body body) {
  const int64_t workers = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunks = std::min<int64_t>(workers, std::max<int64_t>(1, n >> 16));
  const int64_t step = ((n + chunks - 1) / chunks + 15) / 16 * 16;
  std::mutex mutex;
  std::condition_variable done;
  int64_t pending = chunks - 1;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t lo = std::min(n, c * step), hi = std::min(n, lo + step);
    pool.Schedule([&, lo, hi] {
      body(lo, hi);
      std::lock_guard<std::mutex> lock(mutex);
      if (--pending == 0) done.notify_one();
    });
  }
  body(0, std::min(n, step));
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [&] { return pending == 0; });
}

struct Hyper {
  float step, inv_sqrt_bc2, b1, b2, eps;
  explicit Hyper(const F32& h) {
    const float* x = h.typed_data();
    step = x[0], inv_sqrt_bc2 = x[1], b1 = x[2], b2 = x[3], eps = x[4];
  }
};

// The one loop of both kernels: new m and v, and out = P + u (with P) or u (without).
template <bool kAddToParams>
static void AdamLoop(ffi::ThreadPool& pool, const Hyper& k, int64_t n, const float* P,
                     const float* G, const float* M, const float* V, float* Out, float* Mo,
                     float* Vo) {
  ParallelFor(pool, n, [=](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      const float mi = k.b1 * M[i] + (1.f - k.b1) * G[i];
      const float vi = k.b2 * V[i] + (1.f - k.b2) * G[i] * G[i];
      const float step = k.step * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps);
      Mo[i] = mi;
      Vo[i] = vi;
      Out[i] = kAddToParams ? P[i] - step : -step;
    }
  });
}

static ffi::Error AdamParams(ffi::ThreadPool pool, F32 p, F32 g, F32 m, F32 v, F32 h,
                             F32Out p_out, F32Out m_out, F32Out v_out) {
  AdamLoop<true>(pool, Hyper(h), p.element_count(), p.typed_data(), g.typed_data(),
                 m.typed_data(), v.typed_data(), p_out->typed_data(), m_out->typed_data(),
                 v_out->typed_data());
  return ffi::Error::Success();
}

static ffi::Error AdamUpdates(ffi::ThreadPool pool, F32 g, F32 m, F32 v, F32 h,
                              F32Out u_out, F32Out m_out, F32Out v_out) {
  AdamLoop<false>(pool, Hyper(h), g.element_count(), nullptr, g.typed_data(), m.typed_data(),
                  v.typed_data(), u_out->typed_data(), m_out->typed_data(), v_out->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(gc_adam_params, AdamParams,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(gc_adam_updates, AdamUpdates,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>());
