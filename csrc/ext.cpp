// Torch bindings: shape checks, allocation, dispatch to the CPU or CUDA launcher. Nothing else.
#include <torch/extension.h>

#include "config.h"
#include "kernels.h"
#include "gauss_math.h"

#ifdef PINNGS_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define STREAM() ((void *)c10::cuda::getCurrentCUDAStream().stream())
#endif

namespace {

using torch::Tensor;

void check(const Tensor &t, const char *name, torch::ScalarType dtype, std::vector<int64_t> shape) {
    TORCH_CHECK(t.scalar_type() == dtype, name, ": expected dtype ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor");
    TORCH_CHECK(t.dim() == int64_t(shape.size()), name, ": expected ", shape.size(), " dims, got ", t.sizes());
    for (size_t k = 0; k < shape.size(); ++k)
        TORCH_CHECK(shape[k] < 0 || t.size(k) == shape[k], name, ": expected shape ", shape, " (-1 = any), got ",
                    t.sizes());
}

bool on_cuda(const Tensor &ref, std::initializer_list<Tensor> others) {
    for (const auto &t : others)
        TORCH_CHECK(t.device() == ref.device(), "all tensors must be on ", ref.device(), ", one is on ", t.device());
#ifndef PINNGS_WITH_CUDA
    TORCH_CHECK(!ref.is_cuda(), "pinngs._C was built without CUDA; reinstall with a CUDA torch to use the GPU");
#endif
    return ref.is_cuda();
}

int tiles(int W, int H) { return ((W + PINNGS_TILE - 1) / PINNGS_TILE) * ((H + PINNGS_TILE - 1) / PINNGS_TILE); }

std::tuple<Tensor, Tensor> project_fwd(Tensor views, Tensor means, Tensor precis, int64_t W, int64_t H,
                                       double k) {
    const int64_t V = views.size(0), N = means.size(0);
    check(views, "views", torch::kFloat32, {V, pinngs::VIEW_FLOATS});
    check(means, "means", torch::kFloat32, {N, 3});
    check(precis, "precis", torch::kFloat32, {N, 6});
    auto params = torch::empty({V, N, PINNGS_PARAMS}, means.options());
    auto rects = torch::empty({V, N, 4}, means.options().dtype(torch::kInt32));
    if (on_cuda(views, {means, precis})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(views.device());
        pinngs::project_fwd_cuda(V, N, views.data_ptr<float>(), means.data_ptr<float>(), precis.data_ptr<float>(), W,
                                 H, float(k), params.data_ptr<float>(), rects.data_ptr<int32_t>(), STREAM());
#endif
    } else {
        pinngs::project_fwd_cpu(V, N, views.data_ptr<float>(), means.data_ptr<float>(), precis.data_ptr<float>(), W, H,
                                float(k), params.data_ptr<float>(), rects.data_ptr<int32_t>());
    }
    return {params, rects};
}

std::tuple<Tensor, Tensor> project_bwd(Tensor views, Tensor means, Tensor precis, Tensor v_params) {
    const int64_t V = views.size(0), N = means.size(0);
    check(v_params, "v_params", torch::kFloat32, {V, N, PINNGS_PARAMS});
    auto v_means = torch::empty({N, 3}, means.options());
    auto v_precis = torch::empty({N, 6}, means.options());
    if (on_cuda(views, {means, precis, v_params})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(views.device());
        pinngs::project_bwd_cuda(V, N, views.data_ptr<float>(), means.data_ptr<float>(), precis.data_ptr<float>(),
                                 v_params.data_ptr<float>(), v_means.data_ptr<float>(), v_precis.data_ptr<float>(),
                                 STREAM());
#endif
    } else {
        pinngs::project_bwd_cpu(V, N, views.data_ptr<float>(), means.data_ptr<float>(), precis.data_ptr<float>(),
                                v_params.data_ptr<float>(), v_means.data_ptr<float>(), v_precis.data_ptr<float>());
    }
    return {v_means, v_precis};
}

// -> (offsets [V*T + 1] int64, ids [M] int32)
std::tuple<Tensor, Tensor> bin(Tensor rects, int64_t W, int64_t H) {
    const int64_t V = rects.size(0), N = rects.size(1);
    check(rects, "rects", torch::kInt32, {V, N, 4});
    const int64_t VT = V * tiles(W, H);
    auto i64 = rects.options().dtype(torch::kInt64);
    if (on_cuda(rects, {})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(rects.device());
        auto counts = torch::empty({V * N}, i64);
        pinngs::bin_count_cuda(V, N, rects.data_ptr<int32_t>(), W, H, counts.data_ptr<int64_t>(), STREAM());
        auto ends = counts.cumsum(0);
        const int64_t M = V * N ? ends[-1].item<int64_t>() : 0;
        auto starts = ends - counts;
        auto keys = torch::empty({M}, i64);
        pinngs::bin_keys_cuda(V, N, rects.data_ptr<int32_t>(), W, H, starts.data_ptr<int64_t>(),
                              keys.data_ptr<int64_t>(), STREAM());
        auto sorted = std::get<0>(keys.sort());
        auto ids = torch::empty({M}, rects.options());
        auto offsets = torch::zeros({VT + 1}, i64);
        pinngs::bin_ranges_cuda(M, V, N, W, H, sorted.data_ptr<int64_t>(), ids.data_ptr<int32_t>(),
                                offsets.data_ptr<int64_t>(), STREAM());
        return {offsets, ids};
#endif
    }
    auto offsets = torch::empty({VT + 1}, i64);
    const int64_t M = pinngs::bin_count_cpu(V, N, rects.data_ptr<int32_t>(), W, H, offsets.data_ptr<int64_t>());
    auto ids = torch::empty({M}, rects.options());
    pinngs::bin_fill_cpu(V, N, rects.data_ptr<int32_t>(), W, H, offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>());
    return {offsets, ids};
}

Tensor rasterize_fwd(Tensor views, Tensor params, Tensor atten, Tensor rects, Tensor offsets, Tensor ids, int64_t W,
                     int64_t H) {
    const int64_t V = views.size(0), N = params.size(1);
    check(views, "views", torch::kFloat32, {V, pinngs::VIEW_FLOATS});
    check(params, "params", torch::kFloat32, {V, N, PINNGS_PARAMS});
    check(atten, "atten", torch::kFloat32, {V, N});
    check(rects, "rects", torch::kInt32, {V, N, 4});
    check(offsets, "offsets", torch::kInt64, {V * tiles(W, H) + 1});
    check(ids, "ids", torch::kInt32, {-1});
    auto image = torch::empty({V, H, W}, params.options());
    if (on_cuda(views, {params, atten, rects, offsets, ids})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(views.device());
        pinngs::rasterize_fwd_cuda(V, N, views.data_ptr<float>(), params.data_ptr<float>(), atten.data_ptr<float>(),
                                   rects.data_ptr<int32_t>(), offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), W,
                                   H, image.data_ptr<float>(), STREAM());
#endif
    } else {
        pinngs::rasterize_fwd_cpu(V, N, views.data_ptr<float>(), params.data_ptr<float>(), atten.data_ptr<float>(),
                                  rects.data_ptr<int32_t>(), offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), W, H,
                                  image.data_ptr<float>());
    }
    return image;
}

std::tuple<Tensor, Tensor> rasterize_bwd(Tensor views, Tensor params, Tensor atten, Tensor rects, int64_t W,
                                         int64_t H, Tensor v_image) {
    const int64_t V = views.size(0), N = params.size(1);
    check(v_image, "v_image", torch::kFloat32, {V, H, W});
    auto v_params = torch::empty({V, N, PINNGS_PARAMS}, params.options());
    auto v_atten = torch::empty({V, N}, params.options());
    if (on_cuda(views, {params, atten, rects, v_image})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(views.device());
        pinngs::rasterize_bwd_cuda(V, N, views.data_ptr<float>(), params.data_ptr<float>(), atten.data_ptr<float>(),
                                   rects.data_ptr<int32_t>(), W, H, v_image.data_ptr<float>(),
                                   v_params.data_ptr<float>(), v_atten.data_ptr<float>(), STREAM());
#endif
    } else {
        pinngs::rasterize_bwd_cpu(V, N, views.data_ptr<float>(), params.data_ptr<float>(), atten.data_ptr<float>(),
                                  rects.data_ptr<int32_t>(), W, H, v_image.data_ptr<float>(),
                                  v_params.data_ptr<float>(), v_atten.data_ptr<float>());
    }
    return {v_params, v_atten};
}

struct GridArgs {
    float origin[3], spacing[3];
    int shape[3];
};

GridArgs grid_args(const std::vector<double> &origin, const std::vector<double> &spacing,
                   const std::vector<int64_t> &shape) {
    TORCH_CHECK(origin.size() == 3 && spacing.size() == 3 && shape.size() == 3,
                "grid origin, spacing and shape must each have 3 entries");
    GridArgs g;
    for (int a = 0; a < 3; ++a) {
        TORCH_CHECK(spacing[a] > 0 && shape[a] > 0, "grid spacing and shape must be positive");
        g.origin[a] = float(origin[a]); g.spacing[a] = float(spacing[a]); g.shape[a] = int(shape[a]);
    }
    return g;
}

Tensor voxelize_fwd(Tensor means, Tensor precis, Tensor covars, Tensor amps, std::vector<double> origin,
                    std::vector<double> spacing, std::vector<int64_t> shape, double k) {
    const int64_t N = means.size(0);
    check(means, "means", torch::kFloat32, {N, 3});
    check(precis, "precis", torch::kFloat32, {N, 6});
    check(covars, "covars", torch::kFloat32, {N, 6});
    check(amps, "amps", torch::kFloat32, {N});
    const GridArgs g = grid_args(origin, spacing, shape);
    if (on_cuda(means, {precis, covars, amps})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(means.device());
        auto vol = torch::zeros({shape[0], shape[1], shape[2]}, means.options());
        pinngs::voxelize_fwd_cuda(N, means.data_ptr<float>(), precis.data_ptr<float>(), covars.data_ptr<float>(),
                                  amps.data_ptr<float>(), g.origin, g.spacing, g.shape, float(k),
                                  vol.data_ptr<float>(), STREAM());
        return vol;
#endif
    }
    auto vol = torch::empty({shape[0], shape[1], shape[2]}, means.options());
    pinngs::voxelize_fwd_cpu(N, means.data_ptr<float>(), precis.data_ptr<float>(), covars.data_ptr<float>(),
                             amps.data_ptr<float>(), g.origin, g.spacing, g.shape, float(k), vol.data_ptr<float>());
    return vol;
}

std::tuple<Tensor, Tensor, Tensor> voxelize_bwd(Tensor means, Tensor precis, Tensor covars, Tensor amps,
                                                std::vector<double> origin, std::vector<double> spacing,
                                                std::vector<int64_t> shape, double k, Tensor v_vol) {
    const int64_t N = means.size(0);
    check(v_vol, "v_vol", torch::kFloat32, {shape[0], shape[1], shape[2]});
    const GridArgs g = grid_args(origin, spacing, shape);
    auto v_means = torch::empty({N, 3}, means.options());
    auto v_precis = torch::empty({N, 6}, means.options());
    auto v_amps = torch::empty({N}, means.options());
    if (on_cuda(means, {precis, covars, amps, v_vol})) {
#ifdef PINNGS_WITH_CUDA
        const c10::cuda::CUDAGuard guard(means.device());
        pinngs::voxelize_bwd_cuda(N, means.data_ptr<float>(), precis.data_ptr<float>(), covars.data_ptr<float>(),
                                  amps.data_ptr<float>(), g.origin, g.spacing, g.shape, float(k),
                                  v_vol.data_ptr<float>(), v_means.data_ptr<float>(), v_precis.data_ptr<float>(),
                                  v_amps.data_ptr<float>(), STREAM());
#endif
    } else {
        pinngs::voxelize_bwd_cpu(N, means.data_ptr<float>(), precis.data_ptr<float>(), covars.data_ptr<float>(),
                                 amps.data_ptr<float>(), g.origin, g.spacing, g.shape, float(k),
                                 v_vol.data_ptr<float>(), v_means.data_ptr<float>(), v_precis.data_ptr<float>(),
                                 v_amps.data_ptr<float>());
    }
    return {v_means, v_precis, v_amps};
}

bool has_cuda() {
#ifdef PINNGS_WITH_CUDA
    return true;
#else
    return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("project_fwd", &project_fwd);
    m.def("project_bwd", &project_bwd);
    m.def("bin", &bin);
    m.def("rasterize_fwd", &rasterize_fwd);
    m.def("rasterize_bwd", &rasterize_bwd);
    m.def("voxelize_fwd", &voxelize_fwd);
    m.def("voxelize_bwd", &voxelize_bwd);
    m.def("has_cuda", &has_cuda);
    m.attr("TILE") = PINNGS_TILE;
    m.attr("VIEW_FLOATS") = pinngs::VIEW_FLOATS;
}
