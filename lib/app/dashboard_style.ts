/**
 * The dashboard's style sheet, embedded so a compiled binary carries it and
 * the page fetches nothing from anywhere else (no fonts, no CDN).
 *
 * @module
 */

/** The dashboard's CSS, served as `/app.css`. */
export const DASHBOARD_CSS = `
:root { color-scheme: light dark; --line: #8884; --ok: #2a7; --bad: #c33; --warn: #b80; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 80rem; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
h2 { font-size: 1.05rem; margin: 0 0 .4rem; }
section { border: 1px solid var(--line); border-radius: 6px; padding: .7rem; margin: 0 0 .8rem; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .2rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; }
code, .mono { font-family: ui-monospace, monospace; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .8rem; margin: 0 0 .5rem; }
dt { font-weight: 600; }
dd { margin: 0; }
button { font: inherit; padding: .15rem .6rem; margin: 0 .2rem .2rem 0; cursor: pointer; }
input, select { font: inherit; padding: .15rem .3rem; }
input[type=checkbox] { justify-self: start; }
form.pfo { display: grid; grid-template-columns: max-content minmax(10rem, 22rem) 1fr; gap: .3rem .6rem; align-items: center; }
.error { color: var(--bad); }
.hint { opacity: .75; }
#banner { padding: .5rem .7rem; border-radius: 6px; margin: 0 0 .8rem; background: #c332; display: none; }
#banner.shown { display: block; }
.state-established, .state-listening { color: var(--ok); }
.state-pending, .state-waiting, .state-connecting { color: var(--warn); }
.state-error, .state-failed { color: var(--bad); }
ul.chat { list-style: none; padding: 0; margin: 0 0 .4rem; max-height: 14rem; overflow-y: auto; }
ul.chat li { padding: .1rem 0; white-space: pre-wrap; word-break: break-word; }
svg.chart { width: 100%; height: 90px; border: 1px solid var(--line); }
svg.chart .in { fill: none; stroke: #27c; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
svg.chart .out { fill: none; stroke: #c72; stroke-width: 1.5; vector-effect: non-scaling-stroke; stroke-dasharray: 4 3; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 0 .8rem; }
`;
