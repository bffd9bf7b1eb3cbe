// swift-tools-version: 6.0
import PackageDescription

/// mla-convert: turns MHA/GQA attention with RoPE into Multi-head Latent Attention.
///
/// Every module, by concern (README.md "Layout" has the same table; docs/method.md the method). Each target
/// declares exactly the modules its sources import.
/// - C: `CLAPACK` (OpenBLAS/LAPACKE, imported only by `MLALinalg`), `CHDF5` (libhdf5, imported only by
///   `MLACheckpoint`), `CF16` (F16C half-float conversion), `CKernels` (vectorized softmax/SwiGLU of the
///   forward pass), `COutputCleanup` (signal-safe removal of unfinished outputs, docs/output-safety.md).
/// - `MLATensor`: dtypes, shapes, mapped/owned storage, F16/BF16 conversion.
/// - `MLALinalg`: BLAS GEMM and LAPACK factorizations, top-r eigenpairs and SVDs.
/// - `MLACheckpoint`: safetensors, GGUF, HDF5, HF config, model adapters, output plans.
/// - `MLARuntime`: tokenizer, decoder forward pass, perplexity, calibration statistics, MLA attention,
///   and where the sample data lives (`SampleDataCache`, docs/samples.md).
/// - `MLAConvert`: conversion as a library: the plan (`ConversionPlan`), its automatic choices and run, the
///   conversion stages, rank allocation and the DeepSeek-V3 export.
/// - `MLAVerify`: drift measurements between a model and its conversion, the HTML report.
/// - `MLACLI`: what the command-line tools share (checkpoint opening, progress, runtime options, the
///   command-line values of `MLATensor` and `MLACheckpoint` types).
/// - `mla-convert`, `mla-verify`, `mla-bench`: the command-line front ends and benchmarks.
/// - `MLATestSupport` (under Tests/): fixtures, sample-data paths, the loaded sample model and small synthetic
///   models shared by the test targets.
/// - Test targets, one per module they test: `MLATensorTests`, `MLALinalgTests`, `MLACheckpointTests`,
///   `MLARuntimeTests`, `MLAConvertTests`, `MLAVerifyTests`, and `CLITests` for the built tools.
///
/// docs/architecture.md draws the module graph and follows one conversion through it.
let package = Package(
    name: "mla-convert",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mla-convert", targets: ["mla-convert"]),
        .executable(name: "mla-verify", targets: ["mla-verify"]),
        .executable(name: "mla-bench", targets: ["mla-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLAPACK", path: "Sources/CLAPACK", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .systemLibrary(
            name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev", "zlib1g-dev"])]),
        .target(name: "CF16", path: "Sources/CF16"),
        .target(name: "COutputCleanup", path: "Sources/COutputCleanup"),
        .target(
            name: "CKernels", path: "Sources/CKernels",
            linkerSettings: [.linkedLibrary("mvec", .when(platforms: [.linux])), .linkedLibrary("m")]),
        .target(
            name: "MLATensor", dependencies: ["CF16", "COutputCleanup"],
            linkerSettings: [.linkedLibrary("m")]),
        .target(name: "MLALinalg", dependencies: ["MLATensor", "CLAPACK"]),
        .target(name: "MLACheckpoint", dependencies: ["MLATensor", "CHDF5", "COutputCleanup"]),
        .target(name: "MLARuntime", dependencies: ["MLATensor", "MLALinalg", "MLACheckpoint", "CKernels"]),
        .target(name: "MLAVerify", dependencies: ["MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime"]),
        .target(name: "MLAConvert", dependencies: ["MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime"]),
        .target(
            name: "MLACLI",
            dependencies: [
                "MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime", "CKernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "mla-convert",
            dependencies: [
                "MLACLI", "MLAConvert", "MLATensor", "MLACheckpoint", "MLARuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "mla-verify",
            dependencies: [
                "MLACLI", "MLAVerify", "MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "mla-bench",
            dependencies: [
                "MLACLI", "MLAConvert", "MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(
            name: "MLATestSupport", dependencies: ["MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime"],
            path: "Tests/MLATestSupport"),
        .testTarget(name: "CLITests", dependencies: ["MLACLI", "MLAConvert", "MLACheckpoint", "MLARuntime", "MLALinalg", "MLATensor", "MLATestSupport"]),
        .testTarget(name: "MLAVerifyTests", dependencies: ["MLAVerify", "MLACheckpoint", "MLATestSupport"]),
        .testTarget(name: "MLATensorTests", dependencies: ["MLATensor", "MLATestSupport"]),
        .testTarget(name: "MLALinalgTests", dependencies: ["MLALinalg", "MLACheckpoint", "MLATestSupport"]),
        .testTarget(name: "MLACheckpointTests", dependencies: ["MLACheckpoint", "MLATensor", "MLATestSupport"]),
        .testTarget(
            name: "MLARuntimeTests", dependencies: ["MLARuntime", "MLAConvert", "MLAVerify", "MLACheckpoint", "MLATensor", "MLATestSupport"]),
        .testTarget(
            name: "MLAConvertTests", dependencies: ["MLAConvert", "MLARuntime", "MLACheckpoint", "MLALinalg", "MLATensor", "MLATestSupport"]),
    ]
)
