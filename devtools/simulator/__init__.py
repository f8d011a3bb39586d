"""A Sinch Registrations API simulator: try the service without a Sinch account, and test it.

It serves the token endpoint and the registration and callback-configuration routes the service
uses, keeps registrations with scripted lifecycles, delivers their callbacks signed (in order,
shuffled, duplicated, late) and injects faults, all on command through `/_sim/`.
"""

from devtools.simulator.app import create_simulator_app
from devtools.simulator.control import SimulatorControl
from devtools.simulator.delivery import DeliveryOrder, DeliveryResult
from devtools.simulator.server import SimulatorServer, run_simulator
from devtools.simulator.signing import SIGNATURE_HEADER, sign

__all__ = [
    "SIGNATURE_HEADER",
    "DeliveryOrder",
    "DeliveryResult",
    "SimulatorControl",
    "SimulatorServer",
    "create_simulator_app",
    "run_simulator",
    "sign",
]
