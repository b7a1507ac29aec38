#!/usr/bin/env python3
"""A fake ``claude`` CLI for tests and benchmarks: same flags, same stream-json shapes.

Accepts what claudeclaw passes (``-p``, ``--output-format text|json|stream-json``,
``--verbose``, ``--resume <uuid>``, ``--session-id``, ``--append-system-prompt``,
``--model``, ``--tools``, ``--allowedTools``, ``--disallowedTools``,
``--dangerously-skip-permissions``, ...). Like the real one (2.1.330) it refuses
stream-json without ``--verbose``, an unknown option, and a ``--resume`` id it has never
seen (stderr ``No conversation found with session ID: <id>``, an ``error_during_execution``
result on stdout, rc 1). Everything after ``--`` is the prompt, even ``--version``.

Sessions live in ``$FAKE_CLAUDE_STATE`` (default ``$HOME/.fake-claude``) as
``sessions/<id>.json`` (the list of prompts), so a resume is observable: the reply is
``FAKE-REPLY turn=<n> last=<prompt>`` where n counts this session's prompts.

Directives, anywhere in the prompt (upper case words):

``SLEEP:<s>``          sleep s seconds after ``system/init`` (env ``FAKE_CLAUDE_LATENCY`` sets a
                       default for every run)
``HANG``               print ``system/init`` then hang forever
``AWAIT:<name>``       after ``system/init``, wait until the file ``$FAKE_CLAUDE_STATE/<name>``
                       exists (a gate the test opens), then go on (both modes)
``IGNORE_TERM``        ignore SIGTERM (the runner must escalate to SIGKILL); use with HANG
``GRANDCHILD``         start ``sleep 1000`` in our process group, write its pid to
                       ``$FAKE_CLAUDE_STATE/grandchild.pid`` (before ``system/init``), hang
``BACKGROUND``         start ``sleep 1000`` in our group holding our stdout open, write its pid
                       to ``$FAKE_CLAUDE_STATE/background.pid``, then answer normally and exit
``CRASH``              print ``system/init``, then exit 3 with a message on stderr
``GARBAGE``            mix non-JSON lines, a JSON array and an unknown event into the stream
``LATE_GARBAGE``       (duplex) a non-JSON line right after the turn's result: between turns
``NO_RESULT``          print ``system/init`` and an assistant line, exit 0 without a result
``ERROR:api<status>``  an API error result (``is_error`` true, ``subtype`` success), rc 1
                       (``ERROR:api500``, ``ERROR:api401``, ``ERROR:api429``)
``ERROR:max_turns``    an ``error_max_turns`` result without a ``result`` key, rc 1
``ERROR:ratelimit``    ``You've hit your limit · resets 3pm (UTC)``, rc 1
``ERROR:ratelimit_once`` the same the first time (a marker in the state dir), then a normal reply
``ERROR:api429_once`` an API 429 result the first time (a marker), then a normal reply
``ERROR:thinking``     on a resumed run only: ``Invalid `signature` in `thinking` block``, rc 1
``TOOL:<Name>:<json>`` an assistant ``tool_use`` line, its ``user`` tool_result, then the reply
``STDERR:<n>``         write n bytes to stderr first (pipe-drain tests)
``BIGLINE:<n>``        the reply is n ``x`` characters (long-line tests)
``ECHO_ARGV``          the reply is ``json.dumps(sys.argv[1:])``
``REPLY:<word>``       the reply is exactly <word> (e.g. ``REPLY:HEARTBEAT_OK``)
``ECHO_ENV``           the reply is ``json.dumps(dict(os.environ))``
``ECHO_PROC``          the reply is ``{"uid", "gid", "groups", "env"}`` as JSON (who runs it)
``ECHO_CWD``           the reply is the working directory
``HALFPAIR``           the reply holds a lone surrogate (``"\\ud83d"`` in the JSON)
``WRITE:<name>=<word>`` write ``<word>`` and a newline to the file ``<name>`` in the working
                       directory (as Claude editing code would), before answering

Duplex mode (``--input-format stream-json``, what a warm session uses): no prompt in argv;
stdin carries JSON lines. ``control_request`` ``initialize`` and ``interrupt`` are answered
(any other subtype: an error response, like the real CLI); ``user`` lines are turns, each
answered with ``system/init`` … ``result`` (``total_cost_usd`` cumulative, as the real CLI).
``--replay-user-messages`` echoes a user line when a turn takes it in (not a slash
command, as the real CLI; nor a line containing ``NOECHO``). A user line that
arrives while a turn runs is taken into that turn (echoed, and named in its reply as
``steered=<a|b>``) only during the ``SLEEP`` of a turn that has a ``TOOL:`` directive (the
model sees it at its next step); otherwise it waits, and, like the real CLI, starts as its
own turn only when the next stdin line arrives. stdin EOF: finish the turn, exit 0.
Duplex directives, besides ``SLEEP``, ``TOOL``, ``ERROR:api<n>``, ``ECHO_ARGV/ENV``:

``HANG``               print ``system/init`` and never answer, not even an interrupt
``SILENT``             print nothing at all for that turn, ever (a wedged CLI)
``CRASH``              exit 3 mid-turn (after ``system/init``)
``PERMIT:<Tool>:<json>`` ask the host ``can_use_tool`` for that tool and input; the reply is
                       ``PERMISSION <behavior> <message or updatedInput as JSON>``; several
                       PERMITs are asked at once and answered `` | ``-joined, in order
``CONTROL:<subtype>``  send the host a control request of that subtype; the reply is
                       ``CONTROL-ANSWER <subtype of the host's response> <error text>``

Env ``FAKE_CLAUDE_PIDFILE_DIR``: write ``<pid>.pid`` there at start (orphan checks).
Env ``FAKE_CLAUDE_TIMES``: append ``<pid> start <time.time()>`` to that file at start,
``<pid> recv <time.time()>`` when a user line arrives (a cold run: once its arguments are
read) and ``<pid> result <time.time()>`` just before its result line (bench/).
Startup must stay fast (stdlib only, lazy imports): benchmarks spawn it many times.
"""

import json
import os
import re
import sys
import time
import uuid

VERSION = "2.1.330 (Claude Code)"
MODEL = "claude-opus-5-5"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_VALUE_FLAGS = {
    "--output-format",
    "--input-format",
    "--resume",
    "-r",
    "--session-id",
    "--append-system-prompt",
    "--system-prompt",
    "--model",
    "--fallback-model",
    "--tools",
    "--allowedTools",
    "--allowed-tools",
    "--disallowedTools",
    "--disallowed-tools",
    "--permission-mode",
    "--max-turns",
    "--add-dir",
    "--settings",
    "--mcp-config",
    "--effort",
    "--max-budget-usd",
    "-n",
    "--name",
    "--permission-prompt-tool",
}
_BOOL_FLAGS = {
    "-p",
    "--print",
    "--verbose",
    "--dangerously-skip-permissions",
    "--allow-dangerously-skip-permissions",
    "--include-partial-messages",
    "--no-session-persistence",
    "--fork-session",
    "--bare",
    "--strict-mcp-config",
    "-c",
    "--continue",
    "--replay-user-messages",
}


def _fail(message, rc=1):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(rc)


def echo_proc():
    """ECHO_PROC: who runs this process (the agent, in two-user mode) and its environment."""
    who = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
    return json.dumps({**who, "env": dict(os.environ)})


def _spawn_children(words):
    """GRANDCHILD / BACKGROUND: leave a ``sleep`` in our process group (it shares our
    stdout), its pid in the state dir, for the tests that check the group is emptied."""
    for word in ("GRANDCHILD", "BACKGROUND"):
        if word in words:
            import subprocess

            child = subprocess.Popen(["sleep", "1000"])
            path = os.path.join(_state_dir(), word.lower() + ".pid")
            os.makedirs(_state_dir(), exist_ok=True)
            with open(path + ".tmp", "w") as fh:
                fh.write(str(child.pid))
            os.replace(path + ".tmp", path)


def _latency(prompt):
    """Seconds the turn takes: ``SLEEP:<s>``, else ``$FAKE_CLAUDE_LATENCY``, else 0."""
    sleep = re.search(r"\bSLEEP:([0-9.]+)", prompt)
    if sleep:
        return float(sleep.group(1))
    return float(os.environ.get("FAKE_CLAUDE_LATENCY") or 0)


def _echo_reply(prompt, words, args):
    """The reply an ECHO_*, BIGLINE:<n> or REPLY:<word> directive asks for (None: none)."""
    if "ECHO_ARGV" in words:
        return json.dumps(args)
    if "ECHO_ENV" in words:
        return json.dumps(dict(os.environ))
    if "ECHO_PROC" in words:
        return echo_proc()
    if "ECHO_CWD" in words:
        return os.getcwd()
    if "HALFPAIR" in words:  # a JS string cut inside an emoji, as JSON.stringify writes it
        return "half an emoji: \ud83d"
    bigline = re.search(r"\bBIGLINE:(\d+)", prompt)
    if bigline:
        return "x" * int(bigline.group(1))
    reply = re.search(r"\bREPLY:(\S+)", prompt)
    if reply:
        return reply.group(1)
    return None


def parse_args(args):
    opts = {}
    prompt_parts = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            prompt_parts.extend(args[i + 1 :])
            break
        if arg in ("--version", "-v"):
            print(VERSION)
            sys.exit(0)
        if arg.startswith("-") and "=" in arg and arg.split("=", 1)[0] in _VALUE_FLAGS:
            name, value = arg.split("=", 1)
            opts[name] = value
        elif arg in _VALUE_FLAGS:
            if i + 1 >= len(args):
                _fail(f"error: option '{arg} <value>' argument missing")
            opts.setdefault(arg + "[]", []).append(args[i + 1])
            opts[arg] = args[i + 1]
            i += 1
        elif arg in _BOOL_FLAGS:
            opts[arg] = True
        elif arg.startswith("-") and arg != "-":
            _fail(f"error: unknown option '{arg}'")
        else:
            prompt_parts.append(arg)
        i += 1
    return opts, " ".join(prompt_parts)


def _state_dir():
    configured = os.environ.get("FAKE_CLAUDE_STATE")
    if configured:
        return configured
    return os.path.join(os.environ.get("HOME") or os.path.expanduser("~"), ".fake-claude")


def _await_gate(prompt, interrupted=lambda: False):
    """AWAIT:<name>: block until the test creates the gate file (or an interrupt comes)."""
    gate = re.search(r"\bAWAIT:([\w.-]+)", prompt)
    if gate:
        path = os.path.join(_state_dir(), gate.group(1))
        while not os.path.exists(path) and not interrupted():
            time.sleep(0.02)


def _session_file(session_id):
    return os.path.join(_state_dir(), "sessions", session_id + ".json")


def _load_history(session_id):
    try:
        with open(_session_file(session_id), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _save_history(session_id, history):
    path = _session_file(session_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(history, fh)
    os.replace(tmp, path)


class Out:
    """Writes one JSON event per line (stream-json) and remembers the result."""

    def __init__(self, fmt, session_id):
        self.fmt = fmt
        self.session_id = session_id

    def line(self, obj):
        if self.fmt == "stream-json":
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def raw(self, text):
        if self.fmt == "stream-json":
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def init(self, cwd, model):
        self.line(
            {
                "type": "system",
                "subtype": "init",
                "cwd": cwd,
                "session_id": self.session_id,
                "tools": ["Bash", "Edit", "Glob", "Grep", "Read", "Write"],
                "mcp_servers": [],
                "model": model,
                "permissionMode": "bypassPermissions",
                "apiKeySource": "none",
                "claude_code_version": "2.1.330",
                "output_style": "default",
                "uuid": str(uuid.uuid4()),
                "fake": True,
            }
        )

    def assistant(self, content, model):
        self.line(
            {
                "type": "assistant",
                "message": {
                    "id": "msg_fake_" + uuid.uuid4().hex[:20],
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": str(uuid.uuid4()),
            }
        )

    def result(self, rc, **fields):
        _stamp("result")  # (cold mode: bench/message.py --against an older tree)
        obj = {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "duration_ms": 12,
            "duration_api_ms": 3,
            "num_turns": 1,
            "stop_reason": "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": 0.000188,
            "usage": {"input_tokens": 12, "output_tokens": 7},
            "modelUsage": {},
            "permission_denials": [],
            "terminal_reason": "completed",
            "api_error_status": None,
            "uuid": str(uuid.uuid4()),
        }
        obj.update(fields)
        obj = {k: v for k, v in obj.items() if v is not _ABSENT}
        if self.fmt == "stream-json":
            self.line(obj)
        elif self.fmt == "json":
            sys.stdout.write(json.dumps(obj) + "\n")
        else:
            text = obj.get("result")
            if text is None:
                text = "; ".join(obj.get("errors", []))
            sys.stdout.write(str(text) + "\n")
        sys.stdout.flush()
        sys.exit(rc)


_ABSENT = object()


def _hang():
    while True:
        time.sleep(3600)


def _api_error(status):
    if status == 401:
        return "Failed to authenticate. API Error: 401 fake error 401"
    if status == 429:
        return "API Error: Request rejected (429) · fake error 429"
    return (
        f"API Error: {status} fake error {status}. This is a server-side issue, usually "
        "temporary — try again in a moment."
    )


def main():
    _stamp("start")
    args = sys.argv[1:]
    opts, prompt = parse_args(args)
    pid_dir = os.environ.get("FAKE_CLAUDE_PIDFILE_DIR")
    if pid_dir:
        os.makedirs(pid_dir, exist_ok=True)
        with open(os.path.join(pid_dir, f"{os.getpid()}.pid"), "w") as fh:
            fh.write(str(os.getpid()))
    if not (opts.get("-p") or opts.get("--print")):
        _fail("fake claude: interactive mode is not supported; pass -p")
    fmt = opts.get("--output-format", "text")
    if fmt not in ("text", "json", "stream-json"):
        _fail(f"error: option '--output-format <format>' argument '{fmt}' is invalid.")
    if fmt == "stream-json" and not opts.get("--verbose"):
        _fail("Error: When using --print, --output-format=stream-json requires --verbose")
    if opts.get("--input-format") == "stream-json":
        if fmt != "stream-json":
            _fail("Error: --input-format=stream-json requires output-format=stream-json.")
        Duplex(opts, args).main()
        return
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read()  # like the real CLI: the prompt may come on stdin
    if not prompt.strip():
        _fail(
            "Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print"
        )
    model = opts.get("--model", MODEL)

    resume = opts.get("--resume") or opts.get("-r")
    if resume is not None:
        if not _UUID.fullmatch(resume):
            _fail(
                "Error: --resume requires a valid session ID or session title when used with "
                f'--print. Usage: claude -p --resume <session-id|title>. Provided value "{resume}" '
                "is not a UUID and does not match any session title."
            )
        history = _load_history(resume)
        if history is None:
            out = Out(fmt, resume)
            if fmt == "stream-json":
                out.line(
                    {
                        "type": "result",
                        "subtype": "error_during_execution",
                        "duration_ms": 0,
                        "is_error": True,
                        "num_turns": 0,
                        "session_id": resume,
                        "total_cost_usd": 0,
                        "errors": [f"No conversation found with session ID: {resume}"],
                    }
                )
            _fail(f"No conversation found with session ID: {resume}")
        session_id = resume
    else:
        session_id = opts.get("--session-id") or str(uuid.uuid4())
        if _load_history(session_id) is not None:
            _fail(f"Error: Session ID {session_id} is already in use.")
        history = []

    _stamp("recv")  # a cold run has its prompt once its arguments are read
    out = Out(fmt, session_id)
    words = set(re.findall(r"\b[A-Z_]+\b", prompt))

    stderr_n = re.search(r"\bSTDERR:(\d+)", prompt)
    if stderr_n:
        sys.stderr.write("e" * int(stderr_n.group(1)))
        sys.stderr.flush()
    if "IGNORE_TERM" in words:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _spawn_children(words)

    out.init(os.getcwd(), model)
    if "GARBAGE" in words:
        out.raw("this is not json")
        out.raw("[1, 2, 3]")
        out.raw('{"type": "mystery_event", "new_field": {"x": 1}}')
        out.raw("{truncated")
    if "HANG" in words or "GRANDCHILD" in words:
        _hang()
    _await_gate(prompt)
    latency = _latency(prompt)
    if latency > 0:
        time.sleep(latency)
    if "CRASH" in words:
        _fail("fake claude: simulated crash (CRASH directive)\nTraceback: nothing useful", rc=3)

    # Errors happen before the turn is stored (as with the real CLI's failed API calls).
    error = re.search(r"\bERROR:(\w+)", prompt)
    if error:
        kind = error.group(1)
        if kind == "api429_once":  # the API throttles once; the retry goes through
            marker = os.path.join(_state_dir(), "api429.hit")
            if not os.path.exists(marker):
                open(marker, "w").close()
                kind = "api429"
        if kind.startswith("api") and kind[3:].isdigit():
            status = int(kind[3:])
            out.result(
                1,
                is_error=True,
                result=_api_error(status),
                terminal_reason="api_error",
                api_error_status=status,
                api_error_type="rate_limit_error" if status == 429 else "api_error",
                total_cost_usd=0,
            )
        if kind == "max_turns":
            out.assistant(
                [
                    {
                        "type": "tool_use",
                        "id": "toolu_fake",
                        "name": "Bash",
                        "input": {"command": "true"},
                    }
                ],
                model,
            )
            out.result(
                1,
                subtype="error_max_turns",
                is_error=True,
                result=_ABSENT,
                num_turns=2,
                terminal_reason="max_turns",
                errors=["Reached maximum number of turns (1)"],
            )
        if kind == "ratelimit_once":  # the limit hits once; after it "resets" runs succeed
            marker = os.path.join(_state_dir(), "ratelimit.hit")
            if not os.path.exists(marker):
                open(marker, "w").close()
                kind = "ratelimit"
        if kind == "ratelimit":
            out.result(
                1,
                is_error=True,
                result="You've hit your limit · resets 3pm (UTC)",
                terminal_reason="api_error",
            )
        if kind == "thinking" and resume is not None:
            out.result(
                1,
                is_error=True,
                result=(
                    "API Error: 400 messages.1.content.0: Invalid `signature` in `thinking` block"
                ),
                terminal_reason="api_error",
                api_error_status=400,
            )

    if "NO_RESULT" in words:
        out.assistant([{"type": "text", "text": "partial"}], model)
        sys.exit(0)

    history.append(prompt)
    _save_history(session_id, history)
    for name, word in re.findall(r"\bWRITE:([\w.-]+)=(\S+)", prompt):
        with open(os.path.join(os.getcwd(), name), "w") as fh:
            fh.write(word + "\n")
    num_turns = 1
    tool = re.search(r"\bTOOL:(\w+):", prompt)
    if tool:
        try:
            tool_input, _ = json.JSONDecoder().raw_decode(prompt, tool.end())
        except ValueError:
            tool_input = {}
        name = tool.group(1)
        tool_id = "toolu_fake_" + uuid.uuid4().hex[:12]
        out.assistant([{"type": "text", "text": f"Calling {name}."}], model)
        out.assistant(
            [{"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}], model
        )
        out.line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": "ok"}],
                },
                "parent_tool_use_id": None,
                "session_id": session_id,
                "tool_use_result": {"stdout": "ok", "stderr": "", "interrupted": False},
            }
        )
        num_turns = 2

    reply = _echo_reply(prompt, words, args)
    if reply is None:
        reply = f"FAKE-REPLY turn={len(history)} last={prompt}"
    out.assistant([{"type": "text", "text": reply}], model)
    out.result(0, result=reply, num_turns=num_turns)


def _stamp(what):
    """FAKE_CLAUDE_TIMES: when a prompt arrived / its result was out (bench/message.py)."""
    path = os.environ.get("FAKE_CLAUDE_TIMES")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()} {what} {time.time():.6f}\n")


class Duplex:
    """The warm mode: turns and control requests as JSON lines on stdin."""

    def __init__(self, opts, args):
        import threading

        self.opts = opts
        self.args = args
        self.model = opts.get("--model", MODEL)
        self.replay = bool(opts.get("--replay-user-messages"))
        resume = opts.get("--resume") or opts.get("-r")
        if resume is not None:
            if not _UUID.fullmatch(resume) or _load_history(resume) is None:
                _fail(f"No conversation found with session ID: {resume}")
            self.session_id = resume
            self.history = _load_history(resume)
        else:
            self.session_id = str(uuid.uuid4())
            self.history = []
        self.resumed = resume is not None
        self.out = Out("stream-json", self.session_id)
        self.lock = threading.Lock()  # one writer at a time on stdout
        self.cond = threading.Condition()
        self.waiting = []  # user lines not yet taken by a turn
        self.turn = None  # the running turn's thread
        self.steerable = False  # the running turn takes user lines now
        self.steers = []
        self.interrupted = False
        self.answers = {}  # request_id -> the host's control_response
        self.cost = 0.0

    def line(self, obj):
        with self.lock:
            self.out.line(obj)

    def respond(self, request_id, payload=None, error=None):
        response = {"subtype": "success", "request_id": request_id, "response": payload or {}}
        if error is not None:
            response = {"subtype": "error", "request_id": request_id, "error": error}
        self.line({"type": "control_response", "response": response})

    def main(self):
        import threading

        for raw in sys.stdin:
            raw = raw.strip()
            if not raw:
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                sys.stderr.write("fake claude: bad input line\n")
                continue
            kind = msg.get("type")
            if kind == "control_request":
                self.on_control(msg.get("request_id"), msg.get("request") or {})
            elif kind == "control_response":
                response = msg.get("response") or {}
                with self.cond:
                    self.answers[response.get("request_id")] = response
                    self.cond.notify_all()
            elif kind == "user":
                _stamp("recv")
                content = (msg.get("message") or {}).get("content")
                text = content if isinstance(content, str) else json.dumps(content)
                with self.cond:
                    if self.turn is not None and self.steerable:
                        self.steers.append(text)
                    else:
                        self.waiting.append(text)
            with self.cond:
                if self.turn is None and self.waiting:
                    prompt = self.waiting.pop(0)
                    if "IGNORE_TERM" in prompt:  # signal handlers: main thread only
                        import signal

                        signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    self.interrupted = False
                    self.turn = threading.Thread(target=self.run_turn, args=(prompt,))
                    self.turn.start()
        with self.cond:
            turn = self.turn
        if turn is not None:
            turn.join()
        # stdin closed: done. Skip the interpreter's clean-up (~15 ms of CPU), which the
        # benches would otherwise count among the daemon's costs when a worker closes it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def on_control(self, request_id, request):
        subtype = request.get("subtype")
        if subtype == "initialize":
            self.respond(request_id, {"commands": [], "models": [], "fake": True})
        elif subtype == "interrupt":
            with self.cond:
                self.interrupted = self.turn is not None
                self.cond.notify_all()
            self.respond(request_id, {"still_queued": []})
        else:
            self.respond(
                request_id,
                error=f"Unsupported control request subtype: {subtype}",
            )

    def echo(self, text):
        # like the real CLI, a slash command is not echoed; NOECHO: a test's missing echo
        if self.replay and not text.startswith("/") and "NOECHO" not in text:
            self.line(
                {
                    "type": "user",
                    "message": {"role": "user", "content": text},
                    "session_id": self.session_id,
                    "isReplay": True,
                }
            )

    def ask(self, request):
        """Send the host a control request; its response (None if interrupted: then the
        request is withdrawn with a ``control_cancel_request``)."""
        return self.wait_answer(self.send_request(request))

    def send_request(self, request):
        request_id = "req_" + uuid.uuid4().hex[:12]
        self.line({"type": "control_request", "request_id": request_id, "request": request})
        return request_id

    def wait_answer(self, request_id):
        """The host's response to ``request_id`` (None if interrupted)."""
        with self.cond:
            while request_id not in self.answers and not self.interrupted:
                self.cond.wait(0.05)
            answer = self.answers.pop(request_id, None)
        if answer is None:
            self.line({"type": "control_cancel_request", "request_id": request_id})
        return answer

    def pause(self, seconds):
        """Sleep, honouring an interrupt; True when interrupted."""
        end = time.monotonic() + seconds
        with self.cond:
            while not self.interrupted and time.monotonic() < end:
                self.cond.wait(min(0.02, max(0.0, end - time.monotonic())))
            return self.interrupted

    def finish_interrupted(self):
        self.line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"type": "text", "text": "[Request interrupted by user]"}],
                },
                "session_id": self.session_id,
            }
        )
        self.result(subtype="error_during_execution", is_error=True, result=_ABSENT, num_turns=0)

    def result(self, **fields):
        self.cost += 0.000188 if not fields.get("is_error") else 0.0
        obj = {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "duration_ms": 12,
            "num_turns": 1,
            "session_id": self.session_id,
            "total_cost_usd": round(self.cost, 6),
            "terminal_reason": "completed",
            "queued_turn_count": 0,
            "uuid": str(uuid.uuid4()),
        }
        obj.update(fields)
        with self.cond:  # like the real CLI: idle again the moment the result is out
            _stamp("result")  # before the line: writing it counts as ours (conservative)
            self.line({k: v for k, v in obj.items() if v is not _ABSENT})
            self.idle()

    def idle(self):
        self.turn = None
        self.steerable = False
        self.steers = []
        self.interrupted = False

    def run_turn(self, prompt):
        import threading

        try:
            self._turn(prompt)
        finally:
            with self.cond:
                if self.turn is threading.current_thread():
                    self.idle()

    def _turn(self, prompt):
        words = set(re.findall(r"\b[A-Z_]+\b", prompt))
        if "SILENT" in words:  # a wedged CLI: takes the line, never says a word
            _hang()
        self.echo(prompt)
        self.line(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "model": self.model,
                "permissionMode": "default",
                "claude_code_version": "2.1.330",
                "fake": True,
            }
        )
        _spawn_children(words)
        if "HANG" in words or "GRANDCHILD" in words:
            _hang()
        _await_gate(prompt, lambda: self.interrupted)
        if self.interrupted:
            return self.finish_interrupted()
        if "GARBAGE" in words:
            with self.lock:
                self.out.raw("this is not json")
                self.out.raw('{"type": "mystery_event", "new_field": {"x": 1}}')
        if "CRASH" in words:
            sys.stderr.write("fake claude: simulated crash (CRASH directive)\n")
            sys.stderr.flush()
            os._exit(3)
        tool = re.search(r"\bTOOL:(\w+):", prompt)
        latency = _latency(prompt)
        if tool:
            try:
                tool_input, _ = json.JSONDecoder().raw_decode(prompt, tool.end())
            except ValueError:
                tool_input = {}
            with self.cond:  # from the tool call on, a user line reaches this turn
                self.steerable = True
            tool_id = "toolu_fake_" + uuid.uuid4().hex[:12]
            self.line(self._assistant([{"type": "text", "text": f"Calling {tool.group(1)}."}]))
            self.line(
                self._assistant(
                    [
                        {
                            "type": "tool_use",
                            "id": tool_id,
                            "name": tool.group(1),
                            "input": tool_input,
                        }
                    ]
                )
            )
        if latency > 0 and self.pause(latency):
            return self.finish_interrupted()
        with self.cond:
            self.steerable = False
            steers, self.steers = self.steers, []
        if tool:
            self.line(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {"tool_use_id": tool_id, "type": "tool_result", "content": "ok"}
                        ],
                    },
                    "session_id": self.session_id,
                }
            )
        for text in steers:
            self.echo(text)
        error = re.search(r"\bERROR:(\w+)", prompt)
        kind = error.group(1) if error else ""
        if kind.startswith("api") and kind[3:].isdigit():
            status = int(kind[3:])
            return self.result(
                is_error=True,
                result=_api_error(status),
                terminal_reason="api_error",
                api_error_status=status,
            )
        if kind == "max_turns":
            return self.result(
                subtype="error_max_turns",
                is_error=True,
                result=_ABSENT,
                num_turns=2,
                errors=["Reached maximum number of turns (1)"],
            )
        if kind == "ratelimit_once":  # the limit hits once; after it "resets" turns succeed
            marker = os.path.join(_state_dir(), "ratelimit.hit")
            if not os.path.exists(marker):
                os.makedirs(_state_dir(), exist_ok=True)
                open(marker, "w").close()
                kind = "ratelimit"
        if kind == "ratelimit":
            return self.result(
                is_error=True,
                result="You've hit your limit · resets 3pm (UTC)",
                terminal_reason="api_error",
            )
        if kind == "thinking" and self.resumed:
            return self.result(
                is_error=True,
                result=(
                    "API Error: 400 messages.1.content.0: Invalid `signature` in `thinking` block"
                ),
                terminal_reason="api_error",
                api_error_status=400,
            )
        permits = list(re.finditer(r"\bPERMIT:(\w+):", prompt))
        control = re.search(r"\bCONTROL:(\w+)", prompt)
        if permits:
            # several at once, like the real CLI's parallel tool calls: all asked, then
            # every answer awaited, in order
            request_ids = []
            for permit in permits:
                try:
                    permit_input, _ = json.JSONDecoder().raw_decode(prompt, permit.end())
                except ValueError:
                    permit_input = {}
                request_ids.append(
                    self.send_request(
                        {
                            "subtype": "can_use_tool",
                            "tool_name": permit.group(1),
                            "display_name": permit.group(1),
                            "input": permit_input,
                            "permission_suggestions": [{"type": "setMode", "mode": "acceptEdits"}],
                        }
                    )
                )
            replies = []
            for request_id in request_ids:
                answer = self.wait_answer(request_id)
                if answer is None:
                    return self.finish_interrupted()
                decision = answer.get("response") or {}
                detail = decision.get("message") or json.dumps(decision.get("updatedInput"))
                replies.append(f"PERMISSION {decision.get('behavior')} {detail}")
            reply = " | ".join(replies)
        elif control:
            answer = self.ask({"subtype": control.group(1)})
            if answer is None:
                return self.finish_interrupted()
            reply = f"CONTROL-ANSWER {answer.get('subtype')} {answer.get('error', '')}"
        else:
            reply = _echo_reply(prompt, words, self.args)
        if reply is None:
            reply = f"FAKE-REPLY turn={len(self.history) + 1} last={prompt}"
            if steers:
                reply += " steered=" + "|".join(steers)
        self.history.append(prompt)
        self.history.extend(steers)
        _save_history(self.session_id, self.history)
        for name, word in re.findall(r"\bWRITE:([\w.-]+)=(\S+)", prompt):
            with open(os.path.join(os.getcwd(), name), "w") as fh:
                fh.write(word + "\n")
        self.line(self._assistant([{"type": "text", "text": reply}]))
        self.result(result=reply, num_turns=2 if tool else 1)
        if "LATE_GARBAGE" in words:
            with self.lock:
                self.out.raw("not json, between turns")

    def _assistant(self, content):
        return {
            "type": "assistant",
            "message": {
                "id": "msg_fake_" + uuid.uuid4().hex[:20],
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
            },
            "session_id": self.session_id,
        }


if __name__ == "__main__":
    main()
