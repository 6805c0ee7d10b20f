// Marks the transcript turns the focused field rests on, so a reviewer sees the evidence beside the point.
"use strict";
document.addEventListener("focusin", (event) => {
  const holder = event.target.closest("[data-evidence]");
  document.querySelectorAll(".turn.evidence").forEach((turn) => turn.classList.remove("evidence"));
  if (!holder || !holder.dataset.evidence) {
    return;
  }
  const turns = holder.dataset.evidence.split(" ").map((index) => document.getElementById("turn-" + index));
  turns.filter(Boolean).forEach((turn) => turn.classList.add("evidence"));
  if (turns[0]) {
    turns[0].scrollIntoView({block: "nearest"});
  }
});
