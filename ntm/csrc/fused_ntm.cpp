// A whole sequence of NTM time steps, forward and backward, in one call (ntm/fused.py).
//
// The model is ntm.model.NTM with one controller layer, LSTM or feed-forward (tanh; no state,
// so Whh, bhh, h0 and c0 go unused), and its heads in one stage (all reads, then all writes:
// "rw", "rrww", ...). Forward runs every time step and keeps on a
// tape what the backward needs (given no tape, only the outputs); backward runs the steps in reverse (backpropagation through
// time) with each derivative written out by hand. Plain loops over float arrays: at batch 1 a
// time step is about 70k multiply-adds, and a loop costs less than dispatching tens of small
// tensor operations (ntm.model's compiled step spends most of its time in per-call overhead).
//
// Shapes as in ntm/model.py: T time steps, B batch, I input, C controller units, R read heads,
// W write heads, H = R + W heads, N memory rows, M row width, S shift positions, O output,
// U = I + R * M controller input, P = H * A + W * 2M head parameters with A = M + S + 3.
// Row-major arrays; weights as nn.Linear stores them (out x in).
#include <cmath>
#include <cstring>
#include <vector>

extern "C" {

struct Dims {
    int T, B, I, C, R, W, N, M, S, O;
    float controller_clip, cell_clip;
    int add_tanh;
    int feedforward;  // 1: the controller is tanh(Wih u + bih); 0: an LSTM step
};

}  // extern "C"

namespace {

const float kNormEps = 1e-8f;  // ntm.addressing._NORM_EPS
const float kLogEps = 1e-12f;  // ntm.addressing._LOG_EPS

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// torch's softplus (beta 1, threshold 20) and its derivative
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float softplus_grad(float x) { return x > 20.0f ? 1.0f : sigmoid(x); }

// y[o] = b[o] + sum_i A[o, i] x[i], A (out x in)
void gemv(const float* A, const float* x, const float* b, float* y, int out, int in) {
    for (int o = 0; o < out; ++o) {
        const float* row = A + (long)o * in;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int i = 0; i < in; ++i) acc += row[i] * x[i];
        y[o] = acc + (b ? b[o] : 0.0f);
    }
}

// x[i] += sum_o A[o, i] dy[o]
void gemv_t_acc(const float* A, const float* dy, float* x, int out, int in) {
    for (int o = 0; o < out; ++o) {
        const float* row = A + (long)o * in;
        const float d = dy[o];
        if (d == 0.0f) continue;
#pragma omp simd
        for (int i = 0; i < in; ++i) x[i] += row[i] * d;
    }
}

// dA[o, i] += dy[o] x[i]
void outer_acc(float* dA, const float* dy, const float* x, int out, int in) {
    for (int o = 0; o < out; ++o) {
        float* row = dA + (long)o * in;
        const float d = dy[o];
        if (d == 0.0f) continue;
#pragma omp simd
        for (int i = 0; i < in; ++i) row[i] += d * x[i];
    }
}

void softmax(const float* x, float* y, int n) {
    float mx = x[0];
    for (int i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) sum += (y[i] = std::exp(x[i] - mx));
    const float inv = 1.0f / sum;
    for (int i = 0; i < n; ++i) y[i] *= inv;
}

// dx = y * (dy - sum(y * dy)), the softmax's backward
void softmax_backward(const float* y, const float* dy, float* dx, int n) {
    float dot = 0.0f;
    for (int i = 0; i < n; ++i) dot += y[i] * dy[i];
    for (int i = 0; i < n; ++i) dx[i] = y[i] * (dy[i] - dot);
}

// Where each (t, b) step keeps its values on the tape, in floats.
struct Layout {
    int U, P, A, H;
    long u, hprev, cprev, ig, fg, gg, og, cpre, tc, hnew, p, rnorm, heads, head, e, a, read, wprev, mem, size;
    // per head, from heads + k * head: K, wc, wg, ws, w (N each), s (S), then knorm
    long K, wc, wg, ws, w, s, knorm;

    explicit Layout(const Dims& d) {
        H = d.R + d.W;
        U = d.I + d.R * d.M;
        A = d.M + d.S + 3;
        P = H * A + d.W * 2 * d.M;
        long o = 0;
        auto take = [&o](long n) { long at = o; o += n; return at; };
        u = take(U); hprev = take(d.C); cprev = take(d.C);
        ig = take(d.C); fg = take(d.C); gg = take(d.C); og = take(d.C);
        cpre = take(d.C); tc = take(d.C); hnew = take(d.C); p = take(P); rnorm = take(d.N);
        K = 0; wc = d.N; wg = 2L * d.N; ws = 3L * d.N; w = 4L * d.N; s = 5L * d.N; knorm = s + d.S;
        head = knorm + 1;
        heads = take(H * head);
        e = take((long)d.W * d.M); a = take((long)d.W * d.M); read = take((long)d.R * d.M);
        wprev = take((long)H * d.N); mem = take((long)d.N * d.M);
        size = o;
    }
};

inline float clampf(float x, float lim) { return lim > 0 ? (x < -lim ? -lim : (x > lim ? lim : x)) : x; }
// torch.clamp's backward: the gradient passes where min <= x <= max
inline float clamp_mask(float x, float lim) { return lim > 0 && (x < -lim || x > lim) ? 0.0f : 1.0f; }

}  // namespace

extern "C" {

long ntm_tape_floats(const Dims* d) { return Layout(*d).size; }

void ntm_forward(const Dims* dp, const float* xs, const float* h0, const float* c0, const float* reads0,
                 const float* w0, const float* mem0, const float* Wih, const float* bih, const float* Whh,
                 const float* bhh, const float* Wp, const float* bp, const float* Wo, const float* bo,
                 float* logits, float* tape) {
    const Dims d = *dp;
    const Layout L(d);
    const int C = d.C, N = d.N, M = d.M, S = d.S, H = L.H, R = d.R, W = d.W, U = L.U;
    const int k_shift = (S - 1) / 2;
    std::vector<float> h(C), c(C), reads(R * M), w(H * N), mem(N * M), gates(4 * C), pc(L.P), z(N),
        cat(C + R * M), hh(4 * C), scratch(tape ? 0 : L.size);
    for (int b = 0; b < d.B; ++b) {
        std::memcpy(h.data(), h0 + (long)b * C, C * sizeof(float));
        std::memcpy(c.data(), c0 + (long)b * C, C * sizeof(float));
        std::memcpy(reads.data(), reads0 + (long)b * R * M, R * M * sizeof(float));
        std::memcpy(w.data(), w0 + (long)b * H * N, H * N * sizeof(float));
        std::memcpy(mem.data(), mem0 + (long)b * N * M, N * M * sizeof(float));
        for (int t = 0; t < d.T; ++t) {
            // without a tape (no backward to come) every step writes its values to one scratch step
            float* tp = tape ? tape + ((long)t * d.B + b) * L.size : scratch.data();
            // the controller on [x; reads]: one LSTM step, or one tanh layer
            float* u = tp + L.u;
            std::memcpy(u, xs + ((long)t * d.B + b) * d.I, d.I * sizeof(float));
            std::memcpy(u + d.I, reads.data(), R * M * sizeof(float));
            std::memcpy(tp + L.hprev, h.data(), C * sizeof(float));
            std::memcpy(tp + L.cprev, c.data(), C * sizeof(float));
            std::memcpy(tp + L.wprev, w.data(), H * N * sizeof(float));
            std::memcpy(tp + L.mem, mem.data(), N * M * sizeof(float));
            if (d.feedforward) {
                gemv(Wih, u, bih, gates.data(), C, U);
                for (int j = 0; j < C; ++j) tp[L.hnew + j] = h[j] = std::tanh(gates[j]);
            } else {
                gemv(Wih, u, bih, gates.data(), 4 * C, U);
                std::vector<float>& g = gates;
                gemv(Whh, h.data(), bhh, hh.data(), 4 * C, C);
                for (int j = 0; j < 4 * C; ++j) g[j] += hh[j];
                for (int j = 0; j < C; ++j) {
                    const float ig = sigmoid(g[j]), fg = sigmoid(g[C + j]), gg = std::tanh(g[2 * C + j]),
                                og = sigmoid(g[3 * C + j]);
                    const float cpre = fg * c[j] + ig * gg;
                    const float cn = d.cell_clip > 0 ? clampf(cpre, d.cell_clip) : cpre;
                    const float tc = std::tanh(cn);
                    tp[L.ig + j] = ig; tp[L.fg + j] = fg; tp[L.gg + j] = gg; tp[L.og + j] = og;
                    tp[L.cpre + j] = cpre; tp[L.tc + j] = tc;
                    c[j] = cn;
                    h[j] = og * tc;
                    tp[L.hnew + j] = h[j];
                }
            }
            // the heads' parameters
            float* p = tp + L.p;
            gemv(Wp, h.data(), bp, p, L.P, C);
            for (int j = 0; j < L.P; ++j) pc[j] = clampf(p[j], d.controller_clip);
            float* rnorm = tp + L.rnorm;
            for (int n = 0; n < N; ++n) {
                float ss = 0.0f;
                for (int m = 0; m < M; ++m) ss += mem[n * M + m] * mem[n * M + m];
                rnorm[n] = std::sqrt(ss + kNormEps);
            }
            // addressing, every head on the memory before this step's writes
            for (int k = 0; k < H; ++k) {
                float* hd = tp + L.heads + (long)k * L.head;
                const float* a = pc.data() + (long)k * L.A;
                const float* key = a;
                float kk = 0.0f;
                for (int m = 0; m < M; ++m) kk += key[m] * key[m];
                const float knorm = std::sqrt(kk + kNormEps);
                const float beta = softplus(a[M]), gamma = 1.0f + softplus(a[M + 1]), gate = sigmoid(a[M + 2]);
                hd[L.knorm] = knorm;
                for (int n = 0; n < N; ++n) {
                    float dot = 0.0f;
                    for (int m = 0; m < M; ++m) dot += key[m] * mem[n * M + m];
                    hd[L.K + n] = dot / (knorm * rnorm[n]);
                    z[n] = beta * hd[L.K + n];
                }
                softmax(z.data(), hd + L.wc, N);
                const float* wprev = tp + L.wprev + (long)k * N;
                for (int n = 0; n < N; ++n) hd[L.wg + n] = gate * hd[L.wc + n] + (1.0f - gate) * wprev[n];
                softmax(a + M + 3, hd + L.s, S);
                for (int i = 0; i < N; ++i) {
                    float acc = 0.0f;
                    for (int j = -k_shift; j <= k_shift; ++j) acc += hd[L.wg + ((i - j) % N + N) % N] * hd[L.s + j + k_shift];
                    hd[L.ws + i] = acc;
                }
                for (int n = 0; n < N; ++n) z[n] = gamma * std::log(hd[L.ws + n] + kLogEps);
                softmax(z.data(), hd + L.w, N);
                std::memcpy(w.data() + (long)k * N, hd + L.w, N * sizeof(float));
            }
            // reads, then writes
            float* rd = tp + L.read;
            for (int r = 0; r < R; ++r) {
                const float* wr = w.data() + (long)r * N;
                for (int m = 0; m < M; ++m) rd[r * M + m] = 0.0f;
                for (int n = 0; n < N; ++n)
                    for (int m = 0; m < M; ++m) rd[r * M + m] += wr[n] * mem[n * M + m];
            }
            std::memcpy(reads.data(), rd, R * M * sizeof(float));
            float* er = tp + L.e;
            float* ad = tp + L.a;
            for (int wi = 0; wi < W; ++wi) {
                const float* ea = pc.data() + (long)H * L.A + (long)wi * 2 * M;
                for (int m = 0; m < M; ++m) {
                    er[wi * M + m] = sigmoid(ea[m]);
                    ad[wi * M + m] = d.add_tanh ? std::tanh(ea[M + m]) : ea[M + m];
                }
            }
            for (int n = 0; n < N; ++n)
                for (int m = 0; m < M; ++m) {
                    float kp = 1.0f, add = 0.0f;
                    for (int wi = 0; wi < W; ++wi) {
                        const float wn = w[(long)(R + wi) * N + n];
                        kp *= 1.0f - wn * er[wi * M + m];
                        add += wn * ad[wi * M + m];
                    }
                    mem[n * M + m] = mem[n * M + m] * kp + add;
                }
            // the output
            std::memcpy(cat.data(), h.data(), C * sizeof(float));
            std::memcpy(cat.data() + C, rd, R * M * sizeof(float));
            gemv(Wo, cat.data(), bo, logits + ((long)t * d.B + b) * d.O, d.O, C + R * M);
        }
    }
}

void ntm_backward(const Dims* dp, const float* tape, const float* dlogits, const float* Wih, const float* Whh,
                  const float* Wp, const float* Wo, float* dWih, float* dbih, float* dWhh, float* dbhh, float* dWp,
                  float* dbp, float* dWo, float* dbo, float* dh0, float* dc0, float* dreads0, float* dw0,
                  float* dmem0) {
    const Dims d = *dp;
    const Layout L(d);
    const int C = d.C, N = d.N, M = d.M, S = d.S, H = L.H, R = d.R, W = d.W, U = L.U, RM = R * M;
    const int k_shift = (S - 1) / 2;
    std::vector<float> dh_c(C), dc_c(C), dread_c(RM), dw_c(H * N), dmem_c(N * M), dh(C), dcat(C + RM),
        cat(C + RM), dread(RM), dw(H * N), dmem(N * M), dpc(L.P), de(W * M), dad(W * M), dz(N), dtmp(N),
        dgates(4 * C), du(U), pc(L.P), f(W), drnorm(N), dwg(N), ds(S);
    for (int b = 0; b < d.B; ++b) {
        std::fill(dh_c.begin(), dh_c.end(), 0.0f);
        std::fill(dc_c.begin(), dc_c.end(), 0.0f);
        std::fill(dread_c.begin(), dread_c.end(), 0.0f);
        std::fill(dw_c.begin(), dw_c.end(), 0.0f);
        std::fill(dmem_c.begin(), dmem_c.end(), 0.0f);
        for (int t = d.T - 1; t >= 0; --t) {
            const float* tp = tape + ((long)t * d.B + b) * L.size;
            const float* mem = tp + L.mem;
            const float* rd = tp + L.read;
            const float* hnew = tp + L.hnew;
            const float* p = tp + L.p;
            for (int j = 0; j < L.P; ++j) pc[j] = clampf(p[j], d.controller_clip);
            // the output layer
            const float* dl = dlogits + ((long)t * d.B + b) * d.O;
            std::memcpy(cat.data(), hnew, C * sizeof(float));
            std::memcpy(cat.data() + C, rd, RM * sizeof(float));
            outer_acc(dWo, dl, cat.data(), d.O, C + RM);
            for (int o = 0; o < d.O; ++o) dbo[o] += dl[o];
            std::fill(dcat.begin(), dcat.end(), 0.0f);
            gemv_t_acc(Wo, dl, dcat.data(), d.O, C + RM);
            for (int j = 0; j < C; ++j) dh[j] = dh_c[j] + dcat[j];
            for (int j = 0; j < RM; ++j) dread[j] = dread_c[j] + dcat[C + j];
            std::memcpy(dw.data(), dw_c.data(), H * N * sizeof(float));
            std::fill(dmem.begin(), dmem.end(), 0.0f);
            std::fill(de.begin(), de.end(), 0.0f);
            std::fill(dad.begin(), dad.end(), 0.0f);
            // writes: mem' = mem * prod_w (1 - w e) + sum_w w a
            const float* er = tp + L.e;
            const float* ad = tp + L.a;
            for (int n = 0; n < N; ++n)
                for (int m = 0; m < M; ++m) {
                    const float g = dmem_c[n * M + m];
                    float kp = 1.0f;
                    for (int wi = 0; wi < W; ++wi) {
                        const float wn = tp[L.heads + (long)(R + wi) * L.head + L.w + n];
                        f[wi] = 1.0f - wn * er[wi * M + m];
                        kp *= f[wi];
                    }
                    dmem[n * M + m] += g * kp;
                    const float dkeep = g * mem[n * M + m];
                    for (int wi = 0; wi < W; ++wi) {
                        const float wn = tp[L.heads + (long)(R + wi) * L.head + L.w + n];
                        float others = 1.0f;
                        for (int wj = 0; wj < W; ++wj)
                            if (wj != wi) others *= f[wj];
                        const float df = dkeep * others;
                        dw[(long)(R + wi) * N + n] += -df * er[wi * M + m] + g * ad[wi * M + m];
                        de[wi * M + m] += -df * wn;
                        dad[wi * M + m] += g * wn;
                    }
                }
            // reads: read = w_r @ mem
            for (int r = 0; r < R; ++r) {
                const float* wr = tp + L.heads + (long)r * L.head + L.w;
                for (int n = 0; n < N; ++n) {
                    float acc = 0.0f;
                    for (int m = 0; m < M; ++m) {
                        acc += dread[r * M + m] * mem[n * M + m];
                        dmem[n * M + m] += wr[n] * dread[r * M + m];
                    }
                    dw[(long)r * N + n] += acc;
                }
            }
            // addressing, head by head, back to the head parameters
            const float* rnorm = tp + L.rnorm;
            std::fill(drnorm.begin(), drnorm.end(), 0.0f);
            for (int k = 0; k < H; ++k) {
                const float* hd = tp + L.heads + (long)k * L.head;
                const float* a = pc.data() + (long)k * L.A;
                float* da = dpc.data() + (long)k * L.A;
                const float* key = a;
                const float knorm = hd[L.knorm];
                const float beta = softplus(a[M]), gamma = 1.0f + softplus(a[M + 1]), gate = sigmoid(a[M + 2]);
                // sharpen: w = softmax(gamma * log(ws + eps))
                softmax_backward(hd + L.w, dw.data() + (long)k * N, dz.data(), N);
                float dgamma = 0.0f;
                for (int n = 0; n < N; ++n) {
                    dgamma += dz[n] * std::log(hd[L.ws + n] + kLogEps);
                    dtmp[n] = gamma * dz[n] / (hd[L.ws + n] + kLogEps);  // d ws
                }
                // shift: ws[i] = sum_j wg[i - j] s[j + k]
                std::fill(dwg.begin(), dwg.end(), 0.0f);
                std::fill(ds.begin(), ds.end(), 0.0f);
                for (int i = 0; i < N; ++i)
                    for (int j = -k_shift; j <= k_shift; ++j) {
                        const int src = ((i - j) % N + N) % N;
                        dwg[src] += dtmp[i] * hd[L.s + j + k_shift];
                        ds[j + k_shift] += dtmp[i] * hd[L.wg + src];
                    }
                // interpolation: wg = gate * wc + (1 - gate) * wprev
                const float* wprev = tp + L.wprev + (long)k * N;
                float dgate = 0.0f;
                for (int n = 0; n < N; ++n) {
                    dgate += dwg[n] * (hd[L.wc + n] - wprev[n]);
                    dw_c[(long)k * N + n] = (1.0f - gate) * dwg[n];  // to the previous step's weighting
                    dtmp[n] = gate * dwg[n];                          // d wc
                }
                // content: wc = softmax(beta * K), K = cosine similarity of key and rows
                softmax_backward(hd + L.wc, dtmp.data(), dz.data(), N);
                float dbeta = 0.0f, dknorm = 0.0f;
                for (int m = 0; m < M; ++m) da[m] = 0.0f;
                for (int n = 0; n < N; ++n) {
                    const float K = hd[L.K + n];
                    const float dK = beta * dz[n];
                    dbeta += dz[n] * K;
                    const float ddot = dK / (knorm * rnorm[n]);
                    dknorm -= dK * K / knorm;
                    drnorm[n] -= dK * K / rnorm[n];
                    for (int m = 0; m < M; ++m) {
                        da[m] += ddot * mem[n * M + m];
                        dmem[n * M + m] += ddot * key[m];
                    }
                }
                for (int m = 0; m < M; ++m) da[m] += dknorm * key[m] / knorm;
                da[M] = dbeta * softplus_grad(a[M]);
                da[M + 1] = dgamma * softplus_grad(a[M + 1]);
                da[M + 2] = dgate * gate * (1.0f - gate);
                softmax_backward(hd + L.s, ds.data(), da + M + 3, S);
            }
            for (int n = 0; n < N; ++n)
                for (int m = 0; m < M; ++m) dmem[n * M + m] += drnorm[n] * mem[n * M + m] / rnorm[n];
            for (int wi = 0; wi < W; ++wi) {
                float* dea = dpc.data() + (long)H * L.A + (long)wi * 2 * M;
                for (int m = 0; m < M; ++m) {
                    const float e = er[wi * M + m], av = ad[wi * M + m];
                    dea[m] = de[wi * M + m] * e * (1.0f - e);
                    dea[M + m] = d.add_tanh ? dad[wi * M + m] * (1.0f - av * av) : dad[wi * M + m];
                }
            }
            // the head layer, through its clamp
            for (int j = 0; j < L.P; ++j) dpc[j] *= clamp_mask(p[j], d.controller_clip);
            outer_acc(dWp, dpc.data(), hnew, L.P, C);
            for (int j = 0; j < L.P; ++j) dbp[j] += dpc[j];
            gemv_t_acc(Wp, dpc.data(), dh.data(), L.P, C);
            // the controller step: G gate rows (an LSTM's 4 per unit, a tanh layer's 1)
            const int G = d.feedforward ? C : 4 * C;
            if (d.feedforward) {
                for (int j = 0; j < C; ++j) dgates[j] = dh[j] * (1.0f - hnew[j] * hnew[j]);
            } else {
                for (int j = 0; j < C; ++j) {
                    const float ig = tp[L.ig + j], fg = tp[L.fg + j], gg = tp[L.gg + j], og = tp[L.og + j],
                                tc = tp[L.tc + j];
                    const float dog = dh[j] * tc;
                    float dc = dc_c[j] + dh[j] * og * (1.0f - tc * tc);
                    if (d.cell_clip > 0) dc *= clamp_mask(tp[L.cpre + j], d.cell_clip);
                    dc_c[j] = dc * fg;
                    dgates[j] = dc * gg * ig * (1.0f - ig);
                    dgates[C + j] = dc * tp[L.cprev + j] * fg * (1.0f - fg);
                    dgates[2 * C + j] = dc * ig * (1.0f - gg * gg);
                    dgates[3 * C + j] = dog * og * (1.0f - og);
                }
            }
            outer_acc(dWih, dgates.data(), tp + L.u, G, U);
            for (int j = 0; j < G; ++j) dbih[j] += dgates[j];
            std::fill(du.begin(), du.end(), 0.0f);
            gemv_t_acc(Wih, dgates.data(), du.data(), G, U);
            std::memcpy(dread_c.data(), du.data() + d.I, RM * sizeof(float));
            std::fill(dh_c.begin(), dh_c.end(), 0.0f);  // a tanh layer keeps no state between steps
            if (!d.feedforward) {
                outer_acc(dWhh, dgates.data(), tp + L.hprev, G, C);
                for (int j = 0; j < G; ++j) dbhh[j] += dgates[j];
                gemv_t_acc(Whh, dgates.data(), dh_c.data(), G, C);
            }
            std::memcpy(dmem_c.data(), dmem.data(), N * M * sizeof(float));
        }
        std::memcpy(dh0 + (long)b * C, dh_c.data(), C * sizeof(float));
        std::memcpy(dc0 + (long)b * C, dc_c.data(), C * sizeof(float));
        std::memcpy(dreads0 + (long)b * RM, dread_c.data(), RM * sizeof(float));
        std::memcpy(dw0 + (long)b * H * N, dw_c.data(), H * N * sizeof(float));
        std::memcpy(dmem0 + (long)b * N * M, dmem_c.data(), N * M * sizeof(float));
    }
}

}  // extern "C"
