import assert from "node:assert/strict";
import { handlePromptLine, type PromptCommand } from "./prompt.ts";
import { consoleCommands } from "../console/prompt.ts";
import { daemonCommands } from "../daemon/prompt.ts";

/** Runs lines through handlePromptLine with the Console's table; records what happened. */
async function drive(lines: string[], table: "console" | "daemon" = "console") {
  const printed: string[] = [];
  const chats: string[] = [];
  const ran: string[][] = [];
  let quit = 0;
  const print = (t: string) => void printed.push(t);
  const chat = (text: string) => Promise.resolve(void chats.push(text));
  const base = {
    cli: (words: readonly string[]) => Promise.resolve(void ran.push([...words])),
    chat,
    quit: () => void quit++,
    print,
  };
  const commands: PromptCommand[] = table === "console"
    ? consoleCommands(base)
    : daemonCommands(base);
  for (const line of lines) await handlePromptLine(line, { commands, chat, print });
  return { printed, chats, ran, quit };
}

Deno.test("handlePromptLine() refuses plain lines that look like commands and sends none as chat", async () => {
  const words = ["status", "clear", "quit", "exit", "help", "accept", "STATUS"];
  const r = await drive([...words, "pfo add web --listen 8080 --target db:80", "pfo list"]);
  assert.deepEqual(r.chats, []);
  assert.deepEqual(r.printed, [
    "Did you mean /status?",
    "Did you mean /clear?",
    "Did you mean /quit?",
    "Did you mean /exit?",
    "Did you mean /help?",
    "Did you mean /accept?",
    "Did you mean /status?",
    "Did you mean /pfo?",
    "Did you mean /pfo?",
  ]);
});

Deno.test("handlePromptLine() sends chat and echoes it with `you> `", async () => {
  const r = await drive(["  hello there  ", "status is green", "/chat  spaced   words", ""]);
  assert.deepEqual(r.chats, ["hello there", "status is green", "spaced   words"]);
  assert.deepEqual(r.printed, ["you> hello there", "you> status is green", "you> spaced   words"]);
});

Deno.test("handlePromptLine() names an unknown command and /help lists every command", async () => {
  const r = await drive(["/pfo-list", "/help"]);
  assert.equal(r.printed[0], "Unknown command /pfo-list; /help lists them");
  const help = r.printed.slice(1).join("\n");
  for (
    const c of [
      "/accept",
      "/reject",
      "/pfo add|edit|enable|disable|rm|list",
      "/connections",
      "/kill ID",
      "/chat TEXT",
      "/resolve HOST",
      "/close",
      "/quit",
      "/status",
      "/help",
    ]
  ) assert.ok(help.includes(c), `${c} missing from:\n${help}`);
});

Deno.test("consoleCommands() runs the CLI's own subcommands, with a usage line for missing arguments", async () => {
  const r = await drive([
    "/pfo add web --listen 127.0.0.1:8080 --target db01:80",
    "/pfo rm web",
    "/accept --remember",
    "/reject",
    "/connections",
    "/kill 7",
    "/kill",
    "/resolve db01",
    "/resolve",
    "/close",
    "/status",
    "/quit",
    "/exit",
  ]);
  assert.deepEqual(r.ran, [
    ["pfo", "add", "web", "--listen", "127.0.0.1:8080", "--target", "db01:80"],
    ["pfo", "rm", "web"],
    ["session", "accept", "--remember"],
    ["session", "reject"],
    ["connections", "list"],
    ["connections", "kill", "7"],
    ["resolve", "db01"],
    ["session", "close"],
    ["status"],
  ]);
  assert.deepEqual(r.printed, ["usage: /kill ID", "usage: /resolve HOST"]);
  assert.equal(r.quit, 2);
});

Deno.test("daemonCommands() runs status, connections, kill and close through the CLI, and chat is chat", async () => {
  const r = await drive(
    ["/status", "/connections", "/kill 3", "/close", "/quit", "hi", "close", "/pfo list"],
    "daemon",
  );
  assert.deepEqual(r.ran, [["status"], ["connections", "list"], ["connections", "kill", "3"], [
    "close",
  ]]);
  assert.equal(r.quit, 1);
  assert.deepEqual(r.chats, ["hi"]);
  assert.deepEqual(r.printed, [
    "you> hi",
    "Did you mean /close?",
    "Unknown command /pfo; /help lists them",
  ]);
});

Deno.test("handlePromptLine() prints a failing command's error instead of throwing", async () => {
  const printed: string[] = [];
  await handlePromptLine("hello", {
    commands: [],
    chat: () => Promise.reject(new Error("Cannot chat: no session is established")),
    print: (t) => void printed.push(t),
  });
  assert.deepEqual(printed, ["error: Cannot chat: no session is established"]);
});
