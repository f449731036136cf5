"""Command lines as a container runs them: `command` + `args`, Kubernetes' `$(VAR)` expansion,
and the simple commands of `sh -c` scripts, split as a POSIX shell would.

Each word keeps the field path it came from (`...containers[0].args[2]`), so a finding points at
the string to change. Used by `servers` to find LLM servers' invocations.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlgate.engine.memo import text_cache


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    path: str


_K8S_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SHELL_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh"})
_PYTHON = re.compile(r"python[0-9.]*")
# Commands that run the rest of their words as a command.
_WRAPPERS = frozenset({"exec", "env", "nohup", "time", "command", "nice", "tini", "dumb-init"})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", ";;", "|&"})


def expand_k8s(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of command and args: defined variables are replaced, `$$`
    escapes a dollar, anything else stays as written."""
    if "$" not in text:  # most words and values
        return text

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _K8S_VAR.sub(sub, text)


def container_env(variables: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """A container's env as its processes see it: each value expanded with the variables before
    it, as the kubelet does; one set from valueFrom (None) is unknown here, and left out."""
    env: dict[str, str] = {}
    for name, value in variables:
        if value is None:
            env.pop(name, None)  # the last definition wins, and this one cannot be read
        else:
            env[name] = expand_k8s(value, env)
    return env


def _expand_shell(text: str, variables: Mapping[str, str]) -> str:
    if "$" not in text:  # most words
        return text

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return _SHELL_VAR.sub(sub, text)


def basename(word: str) -> str:
    return word.rsplit("/", 1)[-1]


# Tokenising is most of the cost of reading a command line, and a cluster runs few scripts.
@text_cache(maxsize=512, max_length=16384)
def _shell_words(script: str) -> tuple[str, ...] | None:
    """A script's words and operators as a POSIX shell splits them; None when it cannot be."""
    text = script.replace("\\\n", " ").replace("\n", " ; ")
    # Parentheses stay inside words: `$(VAR)` that Kubernetes left unexpanded is one word.
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return tuple(lexer)
    except ValueError:  # unbalanced quotes: the shell would refuse to run it
        return None


def _script_commands(
    script: Token, params: Sequence[Token], env: Mapping[str, str]
) -> Iterator[list[Token]]:
    """The simple commands of an `sh -c` script. `params` are the words after the script: `$0`
    and then `"$@"`. Variables assigned in the script, or from the container's env, are expanded.
    """
    words = _shell_words(script.text)
    if words is None:
        return
    variables = dict(env)
    command: list[Token] = []
    for word in [*words, ";"]:
        if word in _SEPARATORS:
            if command:
                yield command
            command = []
        elif word in ("$@", "$*"):
            command.extend(params[1:])
        elif not command and _ASSIGNMENT.match(word) and "=" in word:
            name, _, value = word.partition("=")
            variables[name] = _expand_shell(value, variables)
        elif not command and word == "export":
            continue
        else:
            command.append(Token(_expand_shell(word, variables), script.path))


def _shell_script(words: Sequence[Token], i: int) -> int | None:
    """Where the script of `sh -c`, `bash -ec`, `bash -o pipefail -c` ... at `words[i]` is: the
    first operand after the options, when `c` is among them."""
    if basename(words[i].text) not in _SHELLS:
        return None
    has_c, j = False, i + 1
    while j < len(words):
        option = words[j].text
        if option == "--":
            j += 1
            break
        if option[:1] not in ("-", "+") or option.startswith("--"):
            break
        has_c = has_c or "c" in option[1:]
        j += 2 if option in ("-o", "+o", "-O", "+O") else 1
    return j if has_c and j < len(words) else None


def commands(
    words: Sequence[Token], env: Mapping[str, str], depth: int = 0
) -> Iterator[list[Token]]:
    """The simple commands a container runs: its words, or each command of a shell script."""
    for i in range(len(words)):
        script = _shell_script(words, i) if depth < 3 else None
        if script is not None:
            for command in _script_commands(words[script], words[script + 1 :], env):
                yield from commands(command, env, depth + 1)
            return
    yield list(words)


def program(command: Sequence[Token]) -> tuple[str, int]:
    """The program a simple command runs (a python module as `-m module`), and the index of its
    first argument; wrappers such as `exec`, `env A=b` and their options are looked through."""
    wrapped = False
    for i, token in enumerate(command):
        word, name = token.text, basename(token.text)
        if _ASSIGNMENT.match(word) or name in _WRAPPERS or word == "--":
            wrapped = wrapped or name in _WRAPPERS
            continue
        if wrapped and word.startswith("-"):
            continue
        if _PYTHON.fullmatch(name):
            return _python_module(command, i + 1)
        return name, i + 1
    return "", len(command)


# Interpreter options that take the next word as their value.
_PYTHON_VALUED = frozenset({"-X", "-W", "-Q"})


def _python_module(command: Sequence[Token], i: int) -> tuple[str, int]:
    while i < len(command):
        word = command[i].text
        if word == "-m" and i + 1 < len(command):
            return f"-m {command[i + 1].text}", i + 2
        if word.startswith("-m") and len(word) > 2:
            return f"-m {word[2:]}", i + 1
        if not word.startswith("-"):
            return "", i  # a script, not a module
        i += 2 if word in _PYTHON_VALUED else 1
    return "", i


def container_words(value: Any, path: str, env: Mapping[str, str]) -> list[Token]:
    if not isinstance(value, list):
        return []
    return [
        Token(expand_k8s(word, env), f"{path}[{i}]")
        for i, word in enumerate(value)
        if isinstance(word, str)
    ]
