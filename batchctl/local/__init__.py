"""The local stack (see `stack`) and what tests and the local server take from it."""

from batchctl.local.events import LocalLambdaContext
from batchctl.local.resources import ACCOUNT, REGION, STACK
from batchctl.local.stack import LocalStack

__all__ = ["ACCOUNT", "REGION", "STACK", "LocalLambdaContext", "LocalStack"]
