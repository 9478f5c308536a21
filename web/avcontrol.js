// AVControl frontend extension:
// - keeps Empty Audio+Video Latent sizes valid while editing (frames 8n+1, sides multiples of 32) and draws the
//   clip's duration in the node's corner (never in its title: the title is the user's), on loaded graphs too;
// - shows the pack's warnings (what it changed of what was asked) as a toast naming the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const snapFrames = (v) => Math.max(1, Math.round((v - 1) / 8) * 8 + 1);
const snapSide = (v) => Math.max(32, Math.round(v / 32) * 32);

export function durationText(frames, fps) {
  return `${(frames / Math.max(fps, 1e-6)).toFixed(2)} s`;
}

app.registerExtension({
  name: "avcontrol.latentSize",
  nodeCreated(node) {
    if (node.comfyClass !== "AVCEmptyLatent") return;
    const w = (name) => node.widgets?.find((x) => x.name === name);
    for (const [name, snap] of [["frames", snapFrames], ["width", snapSide], ["height", snapSide]]) {
      const widget = w(name);
      if (!widget) continue;
      const original = widget.callback;
      widget.callback = function (value, ...rest) {
        const snapped = snap(Number(value));
        if (snapped !== widget.value) widget.value = snapped;
        node.setDirtyCanvas?.(true, false);
        return original?.call(this, snapped, ...rest);
      };
    }
    const draw = node.onDrawForeground;
    node.onDrawForeground = function (ctx, ...rest) {
      const result = draw?.call(this, ctx, ...rest);
      const frames = w("frames"), fps = w("fps");
      if (frames && fps && !this.flags?.collapsed) {
        this.avcDuration = durationText(Number(frames.value), Number(fps.value));
        ctx.save();
        ctx.font = "12px sans-serif";
        ctx.fillStyle = "#9ab";
        ctx.textAlign = "right";
        ctx.fillText(this.avcDuration, this.size[0] - 8, -8);  // in the title bar's right end
        ctx.restore();
      }
      return result;
    };
  },
  setup() {
    api.addEventListener("avcontrol.warning", ({ detail }) => {
      const summary = `AVControl: ${detail.title}${detail.node ? ` (node ${detail.node})` : ""}`;
      console.warn(summary, detail.message);
      const toast = app.extensionManager?.toast;
      if (toast?.add) toast.add({ severity: "warn", summary, detail: detail.message, life: 12000 });
    });
  },
});
