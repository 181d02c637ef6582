// The review queue's keys: A accepts and R rejects the first decision (unless typing in a field).
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.closest("input, textarea, select")) return;
  const key = event.key.toLowerCase();
  if (key !== "a" && key !== "r") return;
  const button = document.querySelector(`li.decision.current button.${key === "a" ? "accept" : "reject"}`);
  if (button) {
    event.preventDefault();
    button.click();
  }
});
