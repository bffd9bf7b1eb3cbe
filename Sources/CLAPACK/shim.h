// CBLAS and LAPACKE from Debian's OpenBLAS (libopenblas-dev) and liblapacke-dev.
#include <cblas.h>
#include <lapacke.h>

// `lapack_int` is a macro, which Swift cannot see; give it a typedef.
typedef lapack_int clapack_int;

// OpenBLAS's process-wide thread count (see MLALinalg.BLASThreads).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
