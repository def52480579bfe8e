"""The registry's writes that point at versions rather than make them: aliases, traffic
policies, and the evaluations that bless a version.

The blessing rule lives here and nowhere else: the `champion` and `challenger` aliases
move only to a version whose latest evaluation (`gyre evaluate`) blessed it. Forcing one
onto another version takes a reason, and the change log records the move with the reason
and `forced: true`. Every way an alias moves comes through `Aliases.set_alias` (and so
through `blessing_guard`): publishing with `alias=`, `gyre registry alias`, and the
control plane's HTTP route. A traffic policy is held to the same rule: every target whose
answers reach clients (`serving_targets`) is `champion`, `challenger`, or a version (by
number or through another alias) that its latest evaluation blessed, and an alias such a
policy names moves only to a blessed version. Other aliases move freely.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gyre._numbers import is_int64, parse_count
from gyre.errors import InvalidModel, NotBlessed, RegistryError
from gyre.registry._evaluations import AliasGuard, VersionEvaluation
from gyre.registry._metadata import MetadataStore
from gyre.registry._names import CHALLENGER, CHAMPION, check_name
from gyre.registry._policy import check_policy, serving_targets, target_version, targets

if TYPE_CHECKING:
    from gyre.registry._metadata import ModelVersion

# The aliases that traffic follows by default: only a blessed version may hold them.
BLESSED_ALIASES = (CHAMPION, CHALLENGER)


def check_force(what: str, force: bool, reason: str) -> None:
    """Forcing an alias takes a reason, for the change log."""
    if force and not reason.strip():
        raise InvalidModel(
            f'forcing {what} needs a reason (--reason "why"): the change log records it '
            "with the forced move"
        )


def blessing_guard(
    model: str, alias: str, version: int, *, force: bool, reason: str, serves: str = ""
) -> AliasGuard | None:
    """The check that moving `alias` of `model` to `version` obeys the blessing rule
    (None: the alias is free); it raises NotBlessed, or returns True when `force`d past
    the rule. `serves`: the kind of traffic policy that sends clients' traffic to
    `alias` (an alias of any name is then held to the rule)."""
    check_force(f"`{model}@{alias}` to version {version}", force, reason)
    if alias not in BLESSED_ALIASES and not serves:
        return None

    def guard(latest: VersionEvaluation | None) -> bool:
        if latest is not None and latest.blessed:
            return False
        if force:
            return True
        raise NotBlessed(_refusal(model, alias, version, latest, serves))

    return guard


def _refusal(
    model: str, alias: str, version: int, latest: VersionEvaluation | None, serves: str = ""
) -> str:
    held = f" (the {serves} traffic policy sends clients' traffic to it)" if serves else ""
    return (
        f"model `{model}` version {version} {_unblessed(latest)}, and only a blessed version "
        f"can be `{alias}`{held}: run `gyre evaluate {model}:{version}` to bless it, or "
        f'`gyre registry alias {model} {alias} {version} --force --reason "why"` to move '
        "it anyway (the change log records the forced move)"
    )


def _unblessed(latest: VersionEvaluation | None) -> str:
    """Why a version is not blessed, after "version N"."""
    if latest is None:
        return "has no evaluation"
    if latest.broken is not None:
        return f"has a latest evaluation that cannot be read ({latest.broken})"
    reasons = [str(r) for r in latest.summary.get("reasons", [])]
    more = f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
    shown = "; ".join(reasons[:3]) + more
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(latest.at))
    return f"was vetoed by its latest evaluation ({when}: {shown or 'no reason recorded'})"


class Aliases:
    """The alias, policy and evaluation methods of `Registry` (a mixin of it)."""

    metadata: MetadataStore

    if TYPE_CHECKING:

        def versions(self, name: str | None = None) -> list[ModelVersion]: ...

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str = "", force: bool = False
    ) -> int | None:
        """Point `alias` of model `name` at `version`; the version it named before, if any.
        `champion`, `challenger` and any alias the traffic policy sends clients' traffic to
        need a version whose latest evaluation blessed it (NotBlessed otherwise) unless
        `force`, which needs a `reason`."""
        if not is_int64(version) or version < 1:
            raise InvalidModel(f"version {version!r} is not a version number (1, 2, 3, …)")
        check_name("model", name)
        check_name("alias", alias)
        kind, params, broken = self.policy(name)
        serves = kind if broken is None and alias in serving_targets(kind, params) else ""
        guard = blessing_guard(name, alias, version, force=force, reason=reason, serves=serves)
        return self.metadata.set_alias(name, alias, version, reason=reason, guard=guard)

    def record_evaluation(
        self, name: str, version: int, evaluation: dict[str, Any]
    ) -> VersionEvaluation:
        """Attach `gyre evaluate`'s summary (`Evaluation.as_json()`, with `report_sha256`
        when a report was written) to a live version; its verdict becomes the version's."""
        return self.metadata.record_evaluation(name, version, evaluation)

    def evaluation(self, name: str, version: int) -> VersionEvaluation | None:
        """The latest evaluation of model `name` version `version` (None: none yet)."""
        return self.metadata.latest_evaluation(name, version)

    def set_policy(
        self,
        name: str,
        kind: str,
        params: dict[str, Any] | None = None,
        *,
        reason: str = "",
        force: bool = False,
    ) -> dict[str, Any]:
        """Set the traffic policy of model `name` (see `gyre.registry._policy`). Every
        target must name a version that exists now: a split to a missing alias would send
        its share to the champion without a word. Every target whose answers reach clients
        must be blessed (`champion` and `challenger` are, by the alias rule; a version
        number or another alias must name a version its latest evaluation blessed), unless
        `force`, which needs a `reason` and is recorded."""
        live = {mv.version for mv in self.versions(name)}
        clean = check_policy(kind, params or {})
        check_force(f"the {kind} traffic policy of `{name}`", force, reason)
        aliases = self.metadata.aliases(name).get(name, {})
        for target in targets(kind, clean):
            if target_version(target, aliases) not in live:
                raise InvalidModel(
                    f"model `{name}` has no version {target}; versions: "
                    f"{', '.join(map(str, sorted(live)))}"
                    if parse_count(target) is not None
                    else f"model `{name}` has no alias `{target}`; set it first "
                    f"(`gyre registry alias {name} {target} VERSION`) or name a version"
                )
        unblessed = [
            (target, version, latest)
            for target in serving_targets(kind, clean)
            if target not in BLESSED_ALIASES
            for version in [target_version(target, aliases) or 0]
            for latest in [self.metadata.latest_evaluation(name, version)]
            if latest is None or not latest.blessed
        ]
        if unblessed and not force:
            target, version, latest = unblessed[0]
            via = "" if parse_count(target) is not None else f" (alias `{target}`)"
            raise NotBlessed(
                f"the {kind} traffic policy would send clients' traffic to model `{name}` "
                f"version {version}{via}, which {_unblessed(latest)}; only a blessed version "
                f"may answer clients: run `gyre evaluate {name}:{version}` to bless it, "
                f"route to champion or challenger, or set the policy with --force --reason "
                '"why" (the change log records it as forced)'
            )
        self.metadata.set_policy(name, kind, clean, reason=reason, forced=bool(unblessed))
        return clean

    def policy(self, name: str) -> tuple[Any, Any, str | None]:
        """Model `name`'s stored traffic policy as (kind, params, why it cannot be used or
        None); ("champion", {}, None) when none is set."""
        kind, params = self.metadata.policies().get(name, ("champion", {}))
        try:
            return kind, check_policy(kind, params), None
        except InvalidModel as exc:
            return kind, params, str(exc)

    def delete_alias(self, name: str, alias: str, *, reason: str = "") -> None:
        self._not_in_policy(name, alias)
        self.metadata.delete_alias(name, alias, reason=reason)

    def delete_version(self, name: str, version: int, *, reason: str = "") -> None:
        self._not_in_policy(name, str(version))
        self.metadata.delete_version(name, version, reason=reason)

    def _not_in_policy(self, name: str, target: str) -> None:
        """Refuse to remove what the model's traffic policy sends traffic to."""
        kind, params, broken = self.policy(name)
        if broken is None and target in targets(kind, params):
            what = f"version {target}" if parse_count(target) is not None else f"alias `{target}`"
            raise RegistryError(
                f"the {kind} traffic policy of model `{name}` sends traffic to {what}; change "
                f"the policy first (`gyre registry policy {name} champion` to undo it)"
            )
