"""hello-py: the wasmplug reference greeter plugin, in Python.

This is the template for a Python plugin: copy this directory, change NAME
below, and edit the methods. componentize-py turns this module into a
WebAssembly component for the world `greeter-plugin` of ../../wit/plugin.wit
(it embeds CPython; see build.sh).

How WIT maps to Python here (componentize-py conventions):
  - each exported interface is a class named after it (`Lifecycle`,
    `Greeter`) that subclasses the protocol in `wit_world.exports`;
  - imported interfaces are modules under `wit_world.imports`;
  - record -> dataclass (`User(name, age)`), enum -> Enum (`Level.INFO`),
    u32 -> int;
  - `result<T, E>`: return a T for ok; `raise Err(value)` for err(value);
  - any other exception traps: the host discards this instance.

The `wit_world` package is generated at build time. To read it (or give it to
your editor), run `.venv/bin/componentize-py -d ../../wit -w greeter-plugin
bindings bindings/`.

Module-level state lives in this instance's own memory: every instance starts
from a fresh copy and never sees another instance's state.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Identity, Level, User

NAME = "hello-py"
VERSION = "1.0.0"
U32_MAX = 0xFFFF_FFFF

initialised = False  # set by init()
counter = 0  # this instance's counter


def require_init() -> None:
    """Trap if the host skipped init() for this instance."""
    if not initialised:
        raise RuntimeError("greeter called before init")


class Lifecycle(exports.Lifecycle):
    def identity(self) -> Identity:
        # Must not depend on init(): the host calls it first, to name the plugin.
        return Identity(name=NAME, version=VERSION)

    def init(self) -> None:
        # Called once per instance, before anything else. Returning is ok();
        # `raise Err("why")` would refuse the instance.
        global initialised
        initialised = True
        host.log(Level.INFO, f"init {NAME}@{VERSION}")


class Greeter(exports.Greeter):
    def welcome(self, name: str) -> str:
        require_init()
        return f"Welcome, {name}!"

    def hello(self, who: User) -> str:
        require_init()
        return f"Hello, {who.name}!"

    def count(self) -> int:
        require_init()
        global counter
        counter += 1
        return counter

    def birthday(self, who: User) -> User:
        require_init()
        if not who.name:
            # The plugin's own err(...) answer, not a crash.
            raise Err("a user needs a name")
        return User(name=who.name, age=min(who.age + 1, U32_MAX))
