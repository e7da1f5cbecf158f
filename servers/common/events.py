"""Helper events: what the hive tells agents (mostly the manager) about itself.

Servers post them to the broker with `post_event` (service principal); they arrive as messages
from sender `system` with the event as structured data and `summary()` as the readable body.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

AgentName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,10}$")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def summary(self) -> str:
        raise NotImplementedError


class ApprovalResolved(_Event):
    type: Literal["approval_resolved"] = "approval_resolved"
    request_id: int
    request: Literal["apply_commit", "spawn"]
    agent: AgentName
    outcome: Literal["applied", "denied", "failed"]
    by: str
    note: str | None = None  # the operator's note on a denial
    error: str | None = None  # why applying failed

    def summary(self) -> str:
        what = f"request #{self.request_id} ({self.request.replace('_', ' ')} for {self.agent})"
        if self.outcome == "applied":
            return f"{what} was approved by {self.by} and applied"
        if self.outcome == "denied":
            return f"{what} was denied by {self.by}" + (f": {self.note}" if self.note else "")
        return f"{what} was approved by {self.by} but failed: {self.error or 'unknown error'}"


class Spawned(_Event):
    type: Literal["spawned"] = "spawned"
    agent: AgentName
    sha: str | None = None

    def summary(self) -> str:
        return f"agent {self.agent} was spawned" + (f" from {self.sha[:12]}" if self.sha else "")


class Rebuilt(_Event):
    type: Literal["rebuilt"] = "rebuilt"
    agent: AgentName
    sha: str | None = None

    def summary(self) -> str:
        return f"agent {self.agent} was rebuilt" + (f" at {self.sha[:12]}" if self.sha else "")


class Killed(_Event):
    type: Literal["killed"] = "killed"
    agent: AgentName
    by: str

    def summary(self) -> str:
        return f"agent {self.agent} was killed by {self.by}"


class Destroyed(_Event):
    type: Literal["destroyed"] = "destroyed"
    agent: AgentName
    purged: bool = False

    def summary(self) -> str:
        return f"agent {self.agent} was destroyed" + (" and its state purged" if self.purged else "")


class HostDown(_Event):
    """A host of the hive stopped answering (its lifecycle server's heartbeat is late): its agents are
    unreachable, neither stopped nor running as far as the hive can tell, until it is back."""

    type: Literal["host_down"] = "host_down"
    host: str
    agents: list[AgentName]  # the agents that live on it
    silent_seconds: float  # how late its heartbeat was when it was marked down

    def summary(self) -> str:
        on = f"; its agents are unreachable: {', '.join(self.agents)}" if self.agents else ""
        return f"host {self.host} is down (no heartbeat for {self.silent_seconds:.0f} s){on}"


class HostUp(_Event):
    type: Literal["host_up"] = "host_up"
    host: str
    down_seconds: float

    def summary(self) -> str:
        return f"host {self.host} is back after {self.down_seconds:.0f} s down"


class ContainerCrash(_Event):
    type: Literal["container_crash"] = "container_crash"
    agent: AgentName
    exit_code: int | None = None
    signal: str | None = None
    restarts: int = 0
    will_restart: bool = False
    last_lines: list[str] = []  # the end of its log, to see why
    reason: str | None = None  # what the platform knows of why, e.g. "out of memory"

    def summary(self) -> str:
        how = [self.reason] if self.reason else []
        how += [f"signal {self.signal}"] if self.signal else []
        how += [f"exit code {self.exit_code}"] if self.exit_code is not None else []
        how.append(f"{self.restarts} restart{'' if self.restarts == 1 else 's'} so far")
        then = "; restarting it" if self.will_restart else ""
        tail = "\n" + "\n".join(self.last_lines[-5:]) if self.last_lines else ""
        return f"agent {self.agent} crashed ({'; '.join(how)}){then}{tail}"


class StateOverBudget(_Event):
    """An agent's state dir holds more than its [sandbox] state_max: it will not start until it holds less."""

    type: Literal["state_over_budget"] = "state_over_budget"
    agent: AgentName
    used: str  # "10.5G"
    budget: str  # "10G"
    refused_start: bool = False  # a start was refused for it (else: seen while it runs)

    def summary(self) -> str:
        then = "; it was not started" if self.refused_start else "; it will not start again until it holds less"
        return f"agent {self.agent}'s state dir holds {self.used}, past its budget of {self.budget}{then}"


class BudgetExhausted(_Event):
    """An agent reached its daily budget (or the hive its own): it takes no turns, its messages wait,
    until the day ends (UTC), the budget is raised or the operator resumes it. Sent once per agent per
    day, and again if it spends the fresh allowance a resume gave it."""

    type: Literal["budget_exhausted"] = "budget_exhausted"
    agent: AgentName
    scope: Literal["agent", "hive"]  # whose budget: the agent's agent.toml [budget], or hive.toml's
    usd_per_day: float
    spent_usd: float  # today, by the agent (scope agent) or the whole hive (scope hive)

    def summary(self) -> str:
        whose = (
            f"its budget of ${self.usd_per_day:.2f}/day"
            if self.scope == "agent"
            else (f"the hive's budget of ${self.usd_per_day:.2f}/day")
        )
        return (
            f"agent {self.agent} is paused: {whose} is reached (${self.spent_usd:.2f} spent today); its "
            "messages wait until tomorrow (UTC), or until the operator raises it (set_budget) or resumes the "
            "agent (resume_agent), or approves a higher agent.toml [budget] usd_per_day"
        )


class OperatorAnswered(_Event):
    """A question the agent asked was resolved: answered, or "[cancelled]" / "[expired]"."""

    type: Literal["operator_answered"] = "operator_answered"
    question_id: int
    question: str
    answer: str
    answered_by: str = "operator"  # the operator, or the agent an ask_agent question went to

    def summary(self) -> str:
        if self.answer in ("[cancelled]", "[expired]"):
            return f"question #{self.question_id} ({self.question!r}) got no answer: {self.answer[1:-1]}"
        who = "" if self.answered_by == "operator" else f" by {self.answered_by}"
        return f"question #{self.question_id} ({self.question!r}) was answered{who}: {self.answer}"


class QuestionAsked(_Event):
    """Another agent asks this one a question (ask_agent); answer it with answer_question."""

    type: Literal["question_asked"] = "question_asked"
    question_id: int
    asker: AgentName
    question: str
    options: list[str] | None = None
    multi: bool = False
    expires_at: str | None = None  # ISO 8601 UTC

    def summary(self) -> str:
        lines = [f"{self.asker} asks you (question #{self.question_id}): {self.question}"]
        if self.options:
            how = "one or more" if self.multi else "one"
            lines.append(f"Options ({how}): " + " | ".join(self.options))
        deadline = f" before {self.expires_at}" if self.expires_at else ""
        lines.append(f"Answer with answer_question(id={self.question_id}, answer=...){deadline}.")
        return "\n".join(lines)


class RepoPushed(_Event):
    """A ref of a forge repo the agent owns or watches moved (a push); fetch to see it."""

    type: Literal["repo_pushed"] = "repo_pushed"
    repo: str
    ref: str  # refs/heads/main
    old: str | None = None  # None: the ref was created
    new: str | None = None  # None: the ref was deleted
    pusher: str

    def summary(self) -> str:
        if self.old is None:
            what = f"created {self.ref} at {(self.new or '')[:12]}"
        elif self.new is None:
            what = f"deleted {self.ref} (was {self.old[:12]})"
        else:
            what = f"pushed {self.ref}: {self.old[:12]}..{self.new[:12]}"
        return f"{self.pusher} {what} in repo {self.repo}"


class ReservationReleased(_Event):
    """The manager or the operator ended reservations the agent held in a forge repo (release by id)."""

    type: Literal["reservation_released"] = "reservation_released"
    repo: str
    patterns: list[str]
    ids: list[int]
    released_by: str

    def summary(self) -> str:
        return f"{self.released_by} released your reservation of {', '.join(self.patterns)} in repo {self.repo}"


HelperEvent = Annotated[
    ApprovalResolved
    | Spawned
    | Rebuilt
    | Killed
    | Destroyed
    | HostDown
    | HostUp
    | ContainerCrash
    | StateOverBudget
    | BudgetExhausted
    | OperatorAnswered
    | QuestionAsked
    | RepoPushed
    | ReservationReleased,
    Field(discriminator="type"),
]
HELPER_EVENT: TypeAdapter[HelperEvent] = TypeAdapter(HelperEvent)
