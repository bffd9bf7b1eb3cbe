import CLAPACK

/// A LAPACK routine reported failure. `info < 0`: argument −info was illegal (a bug in our call);
/// `info > 0`: the routine's own failure (no convergence, not positive definite), per routine.
public struct LAPACKError: Error, CustomStringConvertible, Sendable {
    public let routine: String
    public let info: Int
    public let rows: Int
    public let cols: Int

    public var description: String {
        if info < 0 { return "\(routine): argument \(-info) was illegal for a \(rows)×\(cols) matrix (internal error)" }
        switch routine.dropFirst() {
        case "potrf": return "\(routine): \(rows)×\(cols) matrix is not positive definite (leading minor \(info))"
        default: return "\(routine): failed to converge on a \(rows)×\(cols) matrix (info \(info))"
        }
    }
}

/// Workspace sizes for LAPACK routines. Single-precision queries return the size as a Float, which
/// rounds *down* above 2^24 in LAPACK before 3.12 (Reference-LAPACK #600; Debian 12's OpenBLAS
/// 0.3.21 lacks the fix): `ssyevd(n = 4096)` asks for 33 579 008 but needs 33 579 009. So every
/// query result goes through `size(query:minimum:)`, which rounds up past the float and takes the
/// documented minimum when that is larger.
enum Workspace {
    static func size<T: LinalgScalar>(query: T, minimum: Int) -> Int {
        let q = Double(query)
        let rounded = T.self == Float.self ? Double(Float(q).nextUp).rounded(.up) : q.rounded(.up)
        return max(Int(rounded), minimum, 1)
    }
}

/// The per-precision LAPACK entry points (LAPACKE `_work` variants, column-major).
public protocol LAPACKScalar: LinalgScalar {
    static var prefix: String { get }
    static func gesdd(_ jobz: CChar, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ lda: Int32,
                      _ s: UnsafeMutablePointer<Self>, _ u: UnsafeMutablePointer<Self>, _ ldu: Int32,
                      _ vt: UnsafeMutablePointer<Self>, _ ldvt: Int32, _ work: UnsafeMutablePointer<Self>, _ lwork: Int32,
                      _ iwork: UnsafeMutablePointer<Int32>) -> Int32
    static func gesvdx(_ jobu: CChar, _ jobvt: CChar, _ range: CChar, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>,
                       _ lda: Int32, _ il: Int32, _ iu: Int32, _ ns: UnsafeMutablePointer<Int32>, _ s: UnsafeMutablePointer<Self>,
                       _ u: UnsafeMutablePointer<Self>, _ ldu: Int32, _ vt: UnsafeMutablePointer<Self>, _ ldvt: Int32,
                       _ work: UnsafeMutablePointer<Self>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>) -> Int32
    /// All eigenvalues (and with `vectors`, eigenvectors in place of `a`) of a symmetric matrix, lower triangle read.
    static func syevd(_ vectors: Bool, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ w: UnsafeMutablePointer<Self>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32
    /// Eigenpairs `il...iu` (1-based, ascending) of a symmetric matrix by MRRR, lower triangle read.
    static func syevr(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ il: Int32, _ iu: Int32, _ found: UnsafeMutablePointer<Int32>,
                      _ w: UnsafeMutablePointer<Self>, _ z: UnsafeMutablePointer<Self>, _ isuppz: UnsafeMutablePointer<Int32>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32
    /// Reduces a symmetric matrix (lower triangle) to tridiagonal form Qᵀ·A·Q = T: diagonal `d`, off-diagonal
    /// `e`, Q's reflectors left in `a` and `tau`.
    static func sytrd(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ d: UnsafeMutablePointer<Self>, _ e: UnsafeMutablePointer<Self>,
                      _ tau: UnsafeMutablePointer<Self>, _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
    /// Every eigenpair of the tridiagonal (`d`, `e`) by divide and conquer: values ascending in `d`, vectors in `z` [n × n].
    static func stedc(_ n: Int32, _ d: UnsafeMutablePointer<Self>, _ e: UnsafeMutablePointer<Self>, _ z: UnsafeMutablePointer<Self>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32
    /// C [n × cols] ← Q·C with the Q that `sytrd` left in `a` and `tau`.
    static func ormtr(_ n: Int32, _ cols: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>,
                      _ c: UnsafeMutablePointer<Self>, _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
    static func potrf(_ n: Int32, _ a: UnsafeMutablePointer<Self>) -> Int32
    static func gelqf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
    static func orglq(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
    static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
    static func orgqr(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
}

private let colMajor = LAPACK_COL_MAJOR

extension Float: LAPACKScalar {
    public static var prefix: String { "s" }
    public static func gesdd(_ jobz: CChar, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ lda: Int32,
                             _ s: UnsafeMutablePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ ldu: Int32,
                             _ vt: UnsafeMutablePointer<Float>, _ ldvt: Int32, _ work: UnsafeMutablePointer<Float>, _ lwork: Int32,
                             _ iwork: UnsafeMutablePointer<Int32>) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sgesdd_work(colMajor, jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork) }
    }
    public static func gesvdx(_ jobu: CChar, _ jobvt: CChar, _ range: CChar, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>,
                              _ lda: Int32, _ il: Int32, _ iu: Int32, _ ns: UnsafeMutablePointer<Int32>, _ s: UnsafeMutablePointer<Float>,
                              _ u: UnsafeMutablePointer<Float>, _ ldu: Int32, _ vt: UnsafeMutablePointer<Float>, _ ldvt: Int32,
                              _ work: UnsafeMutablePointer<Float>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sgesvdx_work(colMajor, jobu, jobvt, range, m, n, a, lda, 0, 0, il, iu, ns, s, u, ldu, vt, ldvt, work, lwork, iwork) }
    }
    public static func syevd(_ vectors: Bool, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ w: UnsafeMutablePointer<Float>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_ssyevd_work(colMajor, CChar(UInt8(ascii: vectors ? "V" : "N")), CChar(UInt8(ascii: "L")), n, a, n, w, work, lwork, iwork, liwork) }
    }
    public static func syevr(_ n: Int32, _ a: UnsafeMutablePointer<Float>, _ il: Int32, _ iu: Int32, _ found: UnsafeMutablePointer<Int32>,
                             _ w: UnsafeMutablePointer<Float>, _ z: UnsafeMutablePointer<Float>, _ isuppz: UnsafeMutablePointer<Int32>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_ssyevr_work(colMajor, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "I")), CChar(UInt8(ascii: "L")), n, a, n, 0, 0,
                                                         il, iu, 0, found, w, z, n, isuppz, work, lwork, iwork, liwork) }
    }
    public static func sytrd(_ n: Int32, _ a: UnsafeMutablePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ e: UnsafeMutablePointer<Float>,
                             _ tau: UnsafeMutablePointer<Float>, _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_ssytrd_work(colMajor, CChar(UInt8(ascii: "L")), n, a, n, d, e, tau, work, lwork) }
    }
    public static func stedc(_ n: Int32, _ d: UnsafeMutablePointer<Float>, _ e: UnsafeMutablePointer<Float>, _ z: UnsafeMutablePointer<Float>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sstedc_work(colMajor, CChar(UInt8(ascii: "I")), n, d, e, z, n, work, lwork, iwork, liwork) }
    }
    public static func ormtr(_ n: Int32, _ cols: Int32, _ a: UnsafeMutablePointer<Float>, _ tau: UnsafeMutablePointer<Float>,
                             _ c: UnsafeMutablePointer<Float>, _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sormtr_work(colMajor, CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "N")), n, cols, a, n, tau, c, n,
                                                          work, lwork) }
    }
    public static func potrf(_ n: Int32, _ a: UnsafeMutablePointer<Float>) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_spotrf_work(colMajor, CChar(UInt8(ascii: "L")), n, a, n) }
    }
    public static func gelqf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ tau: UnsafeMutablePointer<Float>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sgelqf_work(colMajor, m, n, a, m, tau, work, lwork) }
    }
    public static func orglq(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Float>, _ tau: UnsafeMutablePointer<Float>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sorglq_work(colMajor, m, n, k, a, m, tau, work, lwork) }
    }
    public static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ tau: UnsafeMutablePointer<Float>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sgeqrf_work(colMajor, m, n, a, m, tau, work, lwork) }
    }
    public static func orgqr(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Float>, _ tau: UnsafeMutablePointer<Float>,
                             _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_sorgqr_work(colMajor, m, n, k, a, m, tau, work, lwork) }
    }
}

extension Double: LAPACKScalar {
    public static var prefix: String { "d" }
    public static func gesdd(_ jobz: CChar, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ lda: Int32,
                             _ s: UnsafeMutablePointer<Double>, _ u: UnsafeMutablePointer<Double>, _ ldu: Int32,
                             _ vt: UnsafeMutablePointer<Double>, _ ldvt: Int32, _ work: UnsafeMutablePointer<Double>, _ lwork: Int32,
                             _ iwork: UnsafeMutablePointer<Int32>) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dgesdd_work(colMajor, jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork) }
    }
    public static func gesvdx(_ jobu: CChar, _ jobvt: CChar, _ range: CChar, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>,
                              _ lda: Int32, _ il: Int32, _ iu: Int32, _ ns: UnsafeMutablePointer<Int32>, _ s: UnsafeMutablePointer<Double>,
                              _ u: UnsafeMutablePointer<Double>, _ ldu: Int32, _ vt: UnsafeMutablePointer<Double>, _ ldvt: Int32,
                              _ work: UnsafeMutablePointer<Double>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dgesvdx_work(colMajor, jobu, jobvt, range, m, n, a, lda, 0, 0, il, iu, ns, s, u, ldu, vt, ldvt, work, lwork, iwork) }
    }
    public static func syevd(_ vectors: Bool, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ w: UnsafeMutablePointer<Double>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dsyevd_work(colMajor, CChar(UInt8(ascii: vectors ? "V" : "N")), CChar(UInt8(ascii: "L")), n, a, n, w, work, lwork, iwork, liwork) }
    }
    public static func syevr(_ n: Int32, _ a: UnsafeMutablePointer<Double>, _ il: Int32, _ iu: Int32, _ found: UnsafeMutablePointer<Int32>,
                             _ w: UnsafeMutablePointer<Double>, _ z: UnsafeMutablePointer<Double>, _ isuppz: UnsafeMutablePointer<Int32>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dsyevr_work(colMajor, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "I")), CChar(UInt8(ascii: "L")), n, a, n, 0, 0,
                                                         il, iu, 0, found, w, z, n, isuppz, work, lwork, iwork, liwork) }
    }
    public static func sytrd(_ n: Int32, _ a: UnsafeMutablePointer<Double>, _ d: UnsafeMutablePointer<Double>, _ e: UnsafeMutablePointer<Double>,
                             _ tau: UnsafeMutablePointer<Double>, _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dsytrd_work(colMajor, CChar(UInt8(ascii: "L")), n, a, n, d, e, tau, work, lwork) }
    }
    public static func stedc(_ n: Int32, _ d: UnsafeMutablePointer<Double>, _ e: UnsafeMutablePointer<Double>, _ z: UnsafeMutablePointer<Double>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32, _ iwork: UnsafeMutablePointer<Int32>, _ liwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dstedc_work(colMajor, CChar(UInt8(ascii: "I")), n, d, e, z, n, work, lwork, iwork, liwork) }
    }
    public static func ormtr(_ n: Int32, _ cols: Int32, _ a: UnsafeMutablePointer<Double>, _ tau: UnsafeMutablePointer<Double>,
                             _ c: UnsafeMutablePointer<Double>, _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dormtr_work(colMajor, CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "N")), n, cols, a, n, tau, c, n,
                                                          work, lwork) }
    }
    public static func potrf(_ n: Int32, _ a: UnsafeMutablePointer<Double>) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dpotrf_work(colMajor, CChar(UInt8(ascii: "L")), n, a, n) }
    }
    public static func gelqf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ tau: UnsafeMutablePointer<Double>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dgelqf_work(colMajor, m, n, a, m, tau, work, lwork) }
    }
    public static func orglq(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Double>, _ tau: UnsafeMutablePointer<Double>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dorglq_work(colMajor, m, n, k, a, m, tau, work, lwork) }
    }
    public static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ tau: UnsafeMutablePointer<Double>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dgeqrf_work(colMajor, m, n, a, m, tau, work, lwork) }
    }
    public static func orgqr(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Double>, _ tau: UnsafeMutablePointer<Double>,
                             _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        BLASConcurrency.exclusive { LAPACKE_dorgqr_work(colMajor, m, n, k, a, m, tau, work, lwork) }
    }
}
