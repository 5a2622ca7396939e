import assert from "node:assert/strict";
import { child, parseXml, plistValue } from "./_xml.ts";
import { tempDir } from "./_harness.ts";
import { parseUnit, splitExec, splitWindows } from "./_xml.ts";
import { RUNTIME_FLAGS } from "../lib/app/permissions.ts";
import { installNotes } from "../lib/app/service/command.ts";
import { launchdPlist } from "../lib/app/service/launchd.ts";
import { type HostInfo, serviceCommand, underRoot } from "../lib/app/service/plan.ts";
import { type ServiceSpec, validateServiceName } from "../lib/app/service/spec.ts";
import { systemdUnit, systemdWord } from "../lib/app/service/systemd.ts";
import { taskXml, windowsArg } from "../lib/app/service/windows.ts";

function spec(overrides: Partial<ServiceSpec> = {}): ServiceSpec {
  return {
    program: "daemon",
    name: "portferry-daemon",
    scope: "user",
    command: ["/opt/pf/portferry-daemon", "--headless", "--config", "/home/ann/pf/d.yaml"],
    settingsFile: "/home/ann/pf/d.yaml",
    settingsDir: "/home/ann/pf",
    lowPorts: false,
    readPaths: ["/opt/pf/portferry-daemon"],
    denoDir: null,
    logFiles: ["/Users/ann/Library/Logs/pfd.log", "/Users/ann/Library/Logs/pfd.err.log"],
    account: "LocalService",
    userName: "ann",
    ...overrides,
  };
}

const HOST: HostInfo = {
  os: "linux",
  execPath: "/usr/local/bin/deno",
  mainModule: "file:///srv/portferry/daemon.ts",
  homedir: "/home/ann",
  username: "ann",
  uid: 1000,
};

async function systemdVerify(path: string, user: boolean) {
  const runtime = await tempDir("pf-xdg-");
  try {
    const out = await new Deno.Command("systemd-analyze", {
      args: [...(user ? ["--user"] : []), "verify", path],
      env: { XDG_RUNTIME_DIR: runtime, SYSTEMD_LOG_COLOR: "0" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, text: new TextDecoder().decode(out.stderr) };
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error("systemd-analyze is missing: install the Debian package systemd");
    }
    throw err;
  }
}

Deno.test("systemdUnit() output passes systemd-analyze verify with no warning, user and system", async () => {
  const dir = await tempDir("pf-unit-");
  {
    const exe = `${dir}/portferry daemon`;
    await Deno.writeTextFile(exe, "#!/bin/sh\n", { mode: 0o755 });
    for (const scope of ["user", "system"] as const) {
      for (const lowPorts of [false, true]) {
        const unit = systemdUnit(spec({
          scope,
          lowPorts,
          program: lowPorts ? "console" : "daemon",
          command: [exe, "--headless", "--config", `${dir}/50% $HOME.yaml`],
          settingsDir: dir,
          denoDir: `${dir}/deno`,
        }));
        const path = `${dir}/pf-test-${scope}-${lowPorts}.service`;
        await Deno.writeTextFile(path, unit);
        const verdict = await systemdVerify(path, scope === "user");
        assert.equal(verdict.code, 0, verdict.text);
        assert.equal(verdict.text.trim(), "", `systemd-analyze warned:\n${verdict.text}\n${unit}`);
        const exec = splitExec(parseUnit(unit).Service.ExecStart[0]);
        assert.deepEqual(exec, [exe, "--headless", "--config", `${dir}/50% $HOME.yaml`]);
      }
    }
    // The check can fail: an unknown key is a warning it reports.
    const bad = `${dir}/pf-bad.service`;
    await Deno.writeTextFile(bad, systemdUnit(spec({ command: [exe] })) + "Bogus=1\n");
    assert.match((await systemdVerify(bad, false)).text, /Unknown key|Unknown section|Bogus/);
  }
});

Deno.test("systemdUnit() restarts on failure with a back-off and sandboxes the program", () => {
  const unit = parseUnit(systemdUnit(spec({ scope: "system", settingsDir: "/var/lib/pfd" })));
  const s = unit.Service;
  const one = (key: string) => {
    assert.equal(s[key]?.length, 1, `${key}: ${s[key]}`);
    return s[key][0];
  };
  assert.equal(one("Restart"), "on-failure");
  assert.equal(one("RestartSec"), "5");
  assert.ok(Number(unit.Unit.StartLimitBurst[0]) > 0 && unit.Unit.StartLimitIntervalSec[0]);
  assert.equal(one("NoNewPrivileges"), "yes");
  assert.equal(one("ProtectSystem"), "strict");
  assert.equal(one("ProtectHome"), "yes");
  assert.equal(one("ReadWritePaths"), "/var/lib/pfd");
  assert.equal(one("PrivateTmp"), "yes");
  assert.equal(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
  assert.equal(one("CapabilityBoundingSet"), "");
  assert.equal(s.AmbientCapabilities, undefined);
  assert.deepEqual(s.SystemCallFilter, ["@system-service", "@pkey"]);
  assert.equal(one("SystemCallErrorNumber"), "EPERM");
  assert.equal(one("DynamicUser"), "yes");
  assert.equal(one("StateDirectory"), "portferry-daemon");
  assert.equal(s.User, undefined, "a system service never names root");
  assert.equal(unit.Install.WantedBy[0], "multi-user.target");
  assert.equal(s.MemoryDenyWriteExecute, undefined, "V8's JIT needs writable code pages");

  const console = parseUnit(systemdUnit(spec({ program: "console", lowPorts: true })));
  assert.deepEqual(console.Service.CapabilityBoundingSet, ["CAP_NET_BIND_SERVICE"]);
  assert.deepEqual(console.Service.AmbientCapabilities, ["CAP_NET_BIND_SERVICE"]);
  // Settings in a home folder: home folders read-only, the settings folder writable.
  assert.deepEqual(console.Service.ProtectHome, ["read-only"]);
  assert.deepEqual(console.Service.ReadWritePaths, ["/home/ann/pf"]);
  assert.equal(console.Service.DynamicUser, undefined);
  assert.equal(console.Install.WantedBy[0], "default.target");
});

Deno.test("systemdWord() quotes and escapes what systemd would read otherwise", () => {
  for (const word of ["plain", "a b", 'q"uote', "back\\slash", "50%", "$HOME", "semi;", ""]) {
    assert.deepEqual(splitExec(`x ${systemdWord(word)}`), ["x", word], word);
  }
});

Deno.test("launchdPlist() parses as a property list with the keys launchd needs", async () => {
  const command = ["/Applications/pf/portferry-daemon", "--config", "/Users/ann/a&b <c>.yaml"];
  const user = plistValue(parseXml(launchdPlist(spec({ command, settingsDir: "/Users/ann" }))));
  assert.deepEqual(user, {
    Label: "portferry-daemon",
    ProgramArguments: command,
    WorkingDirectory: "/Users/ann",
    RunAtLoad: true,
    KeepAlive: { SuccessfulExit: false },
    ThrottleInterval: 10,
    ProcessType: "Background",
    StandardOutPath: "/Users/ann/Library/Logs/pfd.log",
    StandardErrorPath: "/Users/ann/Library/Logs/pfd.err.log",
  });
  const system = plistValue(
    parseXml(launchdPlist(spec({ scope: "system", denoDir: "/opt/deno-cache" }))),
  ) as Record<string, unknown>;
  assert.equal(system.UserName, "nobody");
  assert.deepEqual(system.EnvironmentVariables, { DENO_DIR: "/opt/deno-cache" });
  assert.throws(() => parseXml("<plist><dict><key>a</key></plist>"));
  // A second reader, independent of ours: Python's plistlib (the format Apple documents).
  const py = new Deno.Command("python3", {
    args: [
      "-c",
      "import json,plistlib,sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = py.stdin.getWriter();
  await writer.write(new TextEncoder().encode(launchdPlist(spec({ command }))));
  await writer.close();
  const out = await py.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const read = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.deepEqual(read.ProgramArguments, command);
  assert.deepEqual(read.KeepAlive, { SuccessfulExit: false });
});

Deno.test("taskXml() parses with a boot trigger, a low-rights principal and the command line", () => {
  const command = [
    "C:\\Program Files\\portferry\\portferry-daemon.exe",
    "--config",
    'C:\\pf data\\d "x".yaml',
    "trailing\\",
  ];
  const system = parseXml(taskXml(spec({ scope: "system", command })));
  assert.equal(system.name, "Task");
  const triggers = child(system, "Triggers");
  assert.deepEqual(triggers.children.map((t) => t.name), ["BootTrigger"]);
  assert.equal(child(triggers, "BootTrigger", "Repetition", "Interval").text, "PT5M");
  const principal = child(system, "Principals", "Principal");
  assert.equal(child(principal, "UserId").text, "S-1-5-19"); // LocalService
  assert.equal(child(principal, "RunLevel").text, "LeastPrivilege");
  assert.equal(child(system, "Settings", "RestartOnFailure", "Count").text, "999");
  assert.equal(child(system, "Settings", "ExecutionTimeLimit").text, "PT0S");
  assert.equal(child(system, "Settings", "MultipleInstancesPolicy").text, "IgnoreNew");
  const exec = child(system, "Actions", "Exec");
  assert.equal(child(exec, "Command").text, command[0]);
  assert.deepEqual(splitWindows(child(exec, "Arguments").text), command.slice(1));

  const asked = parseXml(taskXml(spec({ scope: "system", account: "SYSTEM" })));
  assert.equal(child(asked, "Principals", "Principal", "UserId").text, "S-1-5-18");
  const user = parseXml(taskXml(spec({ scope: "user", userName: "ann" })));
  assert.equal(child(user, "Triggers", "LogonTrigger", "UserId").text, "ann");
  assert.equal(child(user, "Principals", "Principal", "LogonType").text, "InteractiveToken");
});

Deno.test("windowsArg() round-trips through CommandLineToArgvW's rules", () => {
  for (
    const word of ["a", "a b", "", 'say "hi"', "C:\\dir\\", "C:\\a b\\", 'x\\"y', "\\\\srv\\s"]
  ) {
    assert.deepEqual(splitWindows(`p ${windowsArg(word)}`), ["p", word], word);
  }
});

Deno.test("serviceCommand() from source is deno run with the task's flags and absolute paths, never -A", () => {
  const argv = serviceCommand("console", "/etc/pf/c.yaml", "text", {
    ...HOST,
    mainModule: "file:///srv/portferry/console.ts",
  });
  assert.equal(argv[0], "/usr/local/bin/deno");
  assert.equal(argv[1], "run");
  const entry = argv.indexOf("/srv/portferry/console.ts");
  const flags = argv.slice(2, entry);
  assert.deepEqual(flags, [...RUNTIME_FLAGS.console, "--config", "/srv/portferry/deno.json"]);
  assert.ok(!argv.includes("-A") && !argv.includes("--allow-all"));
  assert.ok(flags.every((f) => f.startsWith("--") || f.startsWith("/")), flags.join(" "));
  assert.deepEqual(argv.slice(entry + 1), [
    "--headless",
    "--log-format",
    "text",
    "--config",
    "/etc/pf/c.yaml",
  ]);
  const compiled = serviceCommand("daemon", "/etc/pf/d.yaml", "json", {
    ...HOST,
    execPath: "/usr/local/bin/portferry-daemon",
  });
  assert.deepEqual(compiled, [
    "/usr/local/bin/portferry-daemon",
    "--headless",
    "--log-format",
    "json",
    "--config",
    "/etc/pf/d.yaml",
  ]);
});

Deno.test("validateServiceName() takes unit-, label- and file-safe names only", () => {
  for (const ok of ["portferry-daemon", "pf.office_1", "A", "x".repeat(64)]) {
    assert.equal(validateServiceName(ok), ok);
  }
  for (const bad of ["", "../x", "a/b", "a b", "-x", ".x", "x".repeat(65), "a\\b", "pf.service"]) {
    assert.throws(() => validateServiceName(bad), SyntaxError, bad);
  }
});

Deno.test("underRoot() maps system paths, Windows drives included, under --root", () => {
  assert.equal(
    underRoot("/tmp/r", "/etc/systemd/system/a.service"),
    "/tmp/r/etc/systemd/system/a.service",
  );
  assert.equal(
    underRoot("/tmp/r/", "C:\\ProgramData\\portferry\\a.xml"),
    "/tmp/r/C/ProgramData/portferry/a.xml",
  );
  assert.equal(underRoot(null, "/etc/x"), "/etc/x");
});

Deno.test("systemdUnit() refuses a path with a line break rather than let it start a directive of its own", () => {
  const evil = "/home/ann/x\nExecStartPre=/bin/sh -c id";
  for (
    const s of [
      spec({ settingsDir: evil }),
      spec({ command: ["/opt/pf/portferry-daemon", "--config", `${evil}/d.yaml`] }),
    ]
  ) {
    assert.throws(() => systemdUnit(s), (err: Error) => {
      assert.match(err.message, /^Cannot write ".*\\x0aExecStartPre.*" into a systemd unit/);
      return true;
    });
  }
  assert.throws(() => systemdWord("a\rb"), /control character/);
});

Deno.test("installNotes() warns that a Linux user service cannot listen below port 1024", () => {
  const request = {
    program: "console",
    name: "portferry-console",
    scope: "user",
    platform: "linux",
    settingsFile: "/home/ana/pf/c.yaml",
    root: null,
    logFormat: "json",
    account: "LocalService",
  } as const;
  const low = installNotes(request, HOST, { lowPorts: true }).join("\n");
  assert.match(low, /below port 1024, which a user service cannot do.*--system/);
  assert.doesNotMatch(installNotes(request, HOST, { lowPorts: false }).join("\n"), /1024/);
  // A system service gets CAP_NET_BIND_SERVICE in its unit: no warning.
  const system = installNotes({ ...request, scope: "system" }, HOST, { lowPorts: true });
  assert.doesNotMatch(system.join("\n"), /1024/);
});
