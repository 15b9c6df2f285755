"""rnnguard.diagnose: see vanishing/exploding gradients, get a cure, verify it.

``doctor(model, batch_or_task)`` measures, finds (:mod:`.findings`: rules turning measurements
into verdicts with evidence) and prescribes (:mod:`.prescriptions`: the cure table, recipes
ranked); the building blocks are the gradient
horizon (:mod:`.horizon`), the Jacobian spectrum and Lyapunov exponents (:mod:`.jacobian`), gate
saturation (:mod:`.saturation`), the explosion history of a training log (:mod:`.history`),
plots (:mod:`.plots`), the HTML report (:mod:`.report`), verification runs (:mod:`.verify`) and a
training monitor (:mod:`.monitor`).
"""

from rnnguard.diagnose.doctor import Diagnosis, doctor
from rnnguard.diagnose.findings import DoctorConfig, Evidence, Finding
from rnnguard.diagnose.history import ExplosionHistory, read_history, summarize_history
from rnnguard.diagnose.horizon import Horizon, HorizonSet, gradient_horizons, input_horizon
from rnnguard.diagnose.jacobian import Spectrum, jacobian_spectrum, top_singular_values
from rnnguard.diagnose.monitor import HorizonMonitor
from rnnguard.diagnose.prescriptions import Prescription, prescribe
from rnnguard.diagnose.report import write_report
from rnnguard.diagnose.run import RunDiagnosis, doctor_run
from rnnguard.diagnose.saturation import LayerSaturation, SaturationThresholds, measure_saturation
from rnnguard.diagnose.verify import VerifyReport, verify

__all__ = [
    "Diagnosis",
    "DoctorConfig",
    "Evidence",
    "ExplosionHistory",
    "Finding",
    "Horizon",
    "HorizonMonitor",
    "HorizonSet",
    "LayerSaturation",
    "Prescription",
    "RunDiagnosis",
    "SaturationThresholds",
    "Spectrum",
    "VerifyReport",
    "doctor",
    "doctor_run",
    "gradient_horizons",
    "input_horizon",
    "jacobian_spectrum",
    "measure_saturation",
    "prescribe",
    "read_history",
    "summarize_history",
    "top_singular_values",
    "verify",
    "write_report",
]
