import subprocess
import sys


def test_numba_first_call_skips_the_scipy_blas_probe():
    code = (
        "import sys\n"
        "from weakseg.cli._numba_startup import import_numba_without_blas_probe as f\n"
        "first, second = f(), f()\n"
        "from numba import njit\n"
        "print(first, second, njit(lambda x: x + 1)(1), 'scipy.linalg' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["True", "False", "2", "False"], result.stderr


def test_numba_probe_not_hidden_once_scipy_blas_is_loaded():
    code = (
        "import scipy.linalg.cython_blas\n"
        "from weakseg.cli._numba_startup import import_numba_without_blas_probe as f\n"
        "import numba.np.arraymath as m\n"
        "print(f(), m._HAVE_BLAS)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "True"], result.stderr
