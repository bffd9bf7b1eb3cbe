// HDF5 from Debian's libhdf5-dev (serial build). Its predefined types are globals behind macros
// (H5T_IEEE_F32LE expands to H5open(), H5T_IEEE_F32LE_g), which Swift 6 cannot import as
// concurrency-safe values; these static inline shims hand them to Swift as plain function calls.
#include <hdf5.h>

static inline hid_t mla_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t mla_h5t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t mla_h5t_std_u8le(void) { return H5T_STD_U8LE; }
static inline hid_t mla_h5t_std_i8le(void) { return H5T_STD_I8LE; }
static inline hid_t mla_h5t_std_u16le(void) { return H5T_STD_U16LE; }
static inline hid_t mla_h5t_std_i16le(void) { return H5T_STD_I16LE; }
static inline hid_t mla_h5t_std_u32le(void) { return H5T_STD_U32LE; }
static inline hid_t mla_h5t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t mla_h5t_std_u64le(void) { return H5T_STD_U64LE; }
static inline hid_t mla_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t mla_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t mla_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t mla_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t mla_h5p_group_create(void) { return H5P_GROUP_CREATE; }
static inline hid_t mla_h5p_file_create(void) { return H5P_FILE_CREATE; }
static inline hid_t mla_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t mla_h5s_all(void) { return H5S_ALL; }
static inline unsigned mla_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned mla_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline size_t mla_h5t_variable(void) { return H5T_VARIABLE; }

/// Turns off HDF5's automatic error-stack printing; failures are reported by the caller instead.
static inline void mla_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
static inline haddr_t mla_haddr_undef(void) { return HADDR_UNDEF; }
