"""Narrow a cluster capture to a workload: the addresses of the pods it selects, kept current.

A :class:`WorkloadSelector` says which pods make the workload (namespaces, pod names, a label
selector: a pod must match every criterion given); :meth:`WorkloadSelector.ips` turns it
into the pods' addresses from the aggregator's :class:`~.enrich.Inventory`, and a
:class:`WorkloadUpdater` recomputes them on every inventory change and hands a new set to
the aggregator (:meth:`~.server.Aggregator.set_workload`), which sends it to the agents in a
``WORKLOAD`` frame (see :mod:`..model.protocol`): they keep only flows with an end in it.

What is selected, and what is not:

* A pod's addresses are its ``status.podIPs``, both families, normalized like the agents
  write addresses (``inet_ntop``: see :func:`~.enrich.normalize_ip`).  A pod without an
  address yet (Pending) adds none until it has one.
* Finished pods (phase Succeeded or Failed) are left out: their address may already belong
  to another pod.
* **Host-network pods are skipped** (and logged once each): their address is their node's,
  so selecting it would keep every flow of the node, which is not narrowing.
* **Services are not selected**: the agents see a flow to a ClusterIP on the pod's veth
  after the node's DNAT, so it already carries the backend pod's address; a flow from a
  selected pod to a service is kept because the pod is one of its ends.

The label selector has the Kubernetes syntax (``kubectl -l``): ``k=v``, ``k==v``, ``k!=v``,
``k in (a,b)``, ``k notin (a)``, ``k`` (exists), ``!k`` (does not exist), ``k>1``, ``k<1``
(integer values), requirements separated by commas (AND).  As in Kubernetes, ``!=`` and
``notin`` also match pods without the label.  It is parsed once; bad syntax raises
:class:`ValueError` saying what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from .enrich import Inventory

log = logging.getLogger(__name__)

#: How long to gather inventory changes before recomputing the addresses, in seconds.
DEBOUNCE: Final = 0.2

_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_INTEGER: Final = re.compile(r"[-+]?[0-9]+")
#: The label selector's operators and punctuation.
_SYMBOLS: Final = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")
_TOKENS: Final = re.compile(r"\s*(!=|==|[=!(),<>]|[^\s!=(),<>]+)")
_EQUALITY: Final = {"=": "in", "==": "in", "!=": "notin"}


# --------------------------------------------------------------------------- label selector


class Requirement(NamedTuple):
    """One requirement of a label selector: ``key``, an operator and its values.

    ``op`` is ``in``, ``notin``, ``exists``, ``!exists``, ``gt`` or ``lt`` (``=``/``==`` are
    ``in`` and ``!=`` is ``notin`` with one value).
    """

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "in":
            return value is not None and value in self.values
        if self.op == "notin":
            return value is None or value not in self.values
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if value is None or not _INTEGER.fullmatch(value):
            return False
        bound = int(next(iter(self.values)))
        return int(value) > bound if self.op == "gt" else int(value) < bound


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """The requirements of a Kubernetes label selector (all must hold; none for ``""``).

    :class:`ValueError` says what is wrong, e.g. ``label selector 'app in (web':
    expected ',' or ')' after 'web', found the end``.
    """
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            match = _TOKENS.match(text, pos)
            if match is None:  # only trailing whitespace is left
                break
            self.tokens.append(match.group(1))
            pos = match.end()
        self.pos = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"label selector {self.text!r}: {message}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    @staticmethod
    def shown(token: str | None) -> str:
        return "the end" if token is None else repr(token)

    def parse(self) -> tuple[Requirement, ...]:
        if not self.tokens:
            return ()
        requirements = [self.requirement()]
        while (token := self.take()) is not None:
            if token != ",":
                raise self.error(f"expected ',' between requirements, found {token!r}")
            if self.peek() is None:
                raise self.error("a label key must follow ','")
            requirements.append(self.requirement())
        return tuple(requirements)

    def requirement(self) -> Requirement:
        negated = self.peek() == "!"
        if negated:
            self.take()
        key = self.take()
        if key is None or key in _SYMBOLS:
            raise self.error(f"expected a label key{' after !' if negated else ''}, "
                             f"found {self.shown(key)}")
        self.check_key(key)
        following = self.peek()
        if negated and following not in (None, ","):
            raise self.error(f"'!{key}' (the label is absent) takes no operator nor value, "
                             f"found {following!r}")
        if negated or following in (None, ","):
            return Requirement(key, "!exists" if negated else "exists")
        op = self.take()
        if op in _EQUALITY:
            value = self.peek()
            if value in (None, ","):  # "k=" selects an empty value, as in Kubernetes
                value = ""
            else:
                self.take()
            assert value is not None
            return Requirement(key, _EQUALITY[op], frozenset({self.check_value(key, value)}))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set(key, op))
        if op in (">", "<"):
            value = self.take()
            if value is None or value in _SYMBOLS or not _INTEGER.fullmatch(value):
                raise self.error(f"'{key} {op}' needs an integer, found {self.shown(value)}")
            return Requirement(key, "gt" if op == ">" else "lt", frozenset({value}))
        raise self.error(f"expected an operator after {key!r} (=, ==, !=, in, notin, >, <), "
                         f"',' or the end, found {op!r}")

    def value_set(self, key: str, op: str) -> frozenset[str]:
        token = self.take()
        if token != "(":
            raise self.error(f"'{key} {op}' needs values in parentheses, e.g. "
                             f"'{key} {op} (a,b)', found {self.shown(token)}")
        values: set[str] = set()
        expect_value, last = True, ""
        while True:
            token = self.take()
            if token == ")":
                if expect_value and values:  # "(a,)": an empty value, as in Kubernetes
                    values.add("")
                break
            if token == ",":
                if expect_value:  # "(,a)" or "(a,,b)": an empty value
                    values.add("")
                expect_value = True
                continue
            if token is None or token in _SYMBOLS or not expect_value:
                where = f"after {last!r}" if not expect_value else f"in '{key} {op} (...)'"
                raise self.error(f"expected ',' or ')' {where}, found {self.shown(token)}")
            values.add(self.check_value(key, token))
            expect_value, last = False, token
        if not values:
            raise self.error(f"'{key} {op} ()' has no value: give at least one")
        return frozenset(values)

    def check_key(self, key: str) -> None:
        prefix, slash, name = key.rpartition("/")
        if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            raise self.error(f"invalid label key {key!r}: the prefix before '/' must be a DNS "
                             "subdomain (lowercase letters, digits, '-' and '.')")
        if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
            raise self.error(f"invalid label key {key!r}: a name is at most 63 letters, digits, "
                             "'-', '_' or '.', starting and ending with a letter or digit")

    def check_value(self, key: str, value: str) -> str:
        if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
            raise self.error(f"invalid value {value!r} for {key!r}: a label value is empty or "
                             "at most 63 letters, digits, '-', '_' or '.', starting and ending "
                             "with a letter or digit")
        return value


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a :class:`WorkloadSelector` selects in an inventory."""

    #: The selected pods' addresses.
    ips: frozenset[str]
    #: (namespace, name) of the selected pods that have an address.
    pods: tuple[tuple[str, str], ...]
    #: (namespace, name) of matching pods skipped because they use the host network.
    host_network: tuple[tuple[str, str], ...]


class WorkloadSelector:
    """Which pods make the workload: those that match every criterion given.

    ``namespaces``: the pod's namespace is one of them.  ``pods``: its name is one of them,
    each ``name`` (any namespace) or ``namespace/name``.  ``selector``: a label selector
    (see the module docstring).  Raises :class:`ValueError` for a malformed criterion, or a
    ``namespace/name`` outside ``namespaces`` (it could never match).  With no criterion at
    all, every pod is selected.
    """

    def __init__(self, namespaces: Iterable[str] = (), pods: Iterable[str] = (),
                 selector: str = "") -> None:
        self.namespaces: tuple[str, ...] = tuple(dict.fromkeys(namespaces))
        self.pods: tuple[str, ...] = tuple(dict.fromkeys(pods))
        self.selector = selector.strip()
        for ns in self.namespaces:
            _check_namespace(ns, "namespace")
        names: set[str] = set()
        qualified: set[tuple[str, str]] = set()
        for pod in self.pods:
            ns, slash, name = pod.partition("/")
            if not slash:
                ns, name = "", pod
            elif "/" in name or not ns:
                raise ValueError(f"pod {pod!r}: expected NAME or NAMESPACE/NAME")
            else:
                _check_namespace(ns, f"pod {pod!r}: namespace")
                if self.namespaces and ns not in self.namespaces:
                    raise ValueError(f"pod {pod!r} is not in the namespaces given "
                                     f"({', '.join(self.namespaces)}): it could never match")
            if not name or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
                raise ValueError(f"pod {pod!r}: a pod name is lowercase letters, digits, '-' "
                                 "and '.' (at most 253), starting and ending with a letter "
                                 "or digit")
            if slash:
                qualified.add((ns, name))
            else:
                names.add(name)
        self._namespaces = frozenset(self.namespaces)
        self._names = frozenset(names)
        self._qualified = frozenset(qualified)
        self.requirements = parse_selector(self.selector)
        self._reported: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return (f"WorkloadSelector(namespaces={self.namespaces!r}, pods={self.pods!r}, "
                f"selector={self.selector!r})")

    def describe(self) -> str:
        """The criteria, for logs: ``namespace pods; label selector app=web``."""
        parts = []
        if self.namespaces:
            parts.append(f"namespace {', '.join(self.namespaces)}")
        if self.pods:
            parts.append(f"pod {', '.join(self.pods)}")
        if self.selector:
            parts.append(f"label selector {self.selector}")
        return "; ".join(parts) or "every pod"

    def matches(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        """Whether a pod (whatever its phase or network) matches every criterion."""
        if self._namespaces and namespace not in self._namespaces:
            return False
        if self.pods and name not in self._names and (namespace, name) not in self._qualified:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def resolve(self, inventory: Inventory) -> Resolution:
        """The selected pods and their addresses (see the module docstring for the rules).

        A matching host-network pod is logged (once per pod) and skipped.
        """
        ips: set[str] = set()
        pods: list[tuple[str, str]] = []
        host_network: list[tuple[str, str]] = []
        for pod in inventory.pods():
            if pod.finished or not self.matches(pod.namespace, pod.name, pod.labels):
                continue
            key = (pod.namespace, pod.name)
            if pod.host_network:
                host_network.append(key)
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("workload: pod %s/%s uses the host network: skipped (its "
                                "address is its node's, selecting it would capture the whole "
                                "node)", *key)
                continue
            if pod.ips:
                ips.update(pod.ips)
                pods.append(key)
        return Resolution(frozenset(ips), tuple(sorted(pods)), tuple(sorted(host_network)))

    def ips(self, inventory: Inventory) -> frozenset[str]:
        """The addresses of the selected pods (see :meth:`resolve`)."""
        return self.resolve(inventory).ips


def _check_namespace(ns: str, what: str) -> None:
    if len(ns) > 63 or not _DNS_LABEL.fullmatch(ns):
        raise ValueError(f"{what} {ns!r}: a namespace is at most 63 lowercase letters, digits "
                         "and '-', starting and ending with a letter or digit")


# --------------------------------------------------------------------------- kept current


class WorkloadUpdater:
    """Keeps ``apply`` fed with the workload's addresses as the inventory changes.

    :meth:`start` computes the set at once (call it after the inventory's first list) and
    then listens to the inventory (:attr:`~.enrich.Inventory.on_change`): a pod change
    schedules a recomputation ``debounce`` seconds later (changes in between are taken
    together); ``apply`` is called only when the set differs from the last one, and the
    change is logged (``workload: 3 pods, 4 addresses``).
    """

    def __init__(self, selector: WorkloadSelector, inventory: Inventory,
                 apply: Callable[[frozenset[str]], None], *, debounce: float = DEBOUNCE) -> None:
        self.selector = selector
        self.inventory = inventory
        self.apply = apply
        self.debounce = debounce
        #: The last set handed to ``apply`` (None before the first).
        self.current: frozenset[str] | None = None
        #: Recomputations done, whether the set changed or not.
        self.recomputed = 0
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._previous: Callable[[str], None] | None = None

    def update(self) -> bool:
        """Recompute now; ``apply`` the set if it changed.  True if it did."""
        found = self.selector.resolve(self.inventory)
        self.recomputed += 1
        if found.ips == self.current:
            return False
        self.current = found.ips
        level = logging.INFO if found.ips else logging.WARNING
        log.log(level, "workload: %d pods, %d addresses%s", len(found.pods), len(found.ips),
                "" if found.ips else " (no matching pod has an address: agents keep no flow)")
        self.apply(found.ips)
        return True

    def changed(self, kind: str) -> None:
        """The inventory's change listener: only pods matter."""
        if self._previous is not None:
            self._previous(kind)
        if kind == "Pod":
            self._dirty.set()

    def start(self) -> None:
        """Compute and apply the set now, then follow the inventory (idempotent)."""
        if self._task is not None:
            return
        log.info("workload: narrowing the capture to %s", self.selector.describe())
        self.update()
        self._previous = self.inventory.on_change
        self.inventory.on_change = self.changed
        self._task = asyncio.create_task(self._run(), name="workload-updater")

    async def stop(self) -> None:
        """Stop following the inventory (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        if self.inventory.on_change == self.changed:
            self.inventory.on_change = self._previous
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            try:
                self.update()
            except Exception:  # keep following: the next change tries again
                log.exception("workload: could not update the addresses")
