/*
 * Language switch for the bilingual book: English / 中文 / Both.
 *
 * Every bilingual passage is written twice, once inside an element with class
 * `lang-en` and once inside `lang-zh` (see README.md, "Writing a chapter").
 * The choice is stored as `data-lang` on <html>; lang.css hides the other
 * language. It is kept in localStorage so it holds across pages.
 *
 * This file is loaded in <head>, so the stored choice is applied before the
 * body is drawn (no flash of the hidden language); the buttons are added once
 * the page has loaded.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "cyclelib-lang";
  var CHOICES = [
    { value: "en", label: "English", title: "Show English only" },
    { value: "zh", label: "中文", title: "只显示中文" },
    { value: "both", label: "Both / 双语", title: "Show both languages / 显示两种语言" },
  ];

  function isChoice(value) {
    return CHOICES.some(function (choice) { return choice.value === value; });
  }

  // localStorage can throw (disabled storage, file:// in some browsers):
  // the switch then still works, it just is not remembered.
  function readStored() {
    try {
      var value = window.localStorage.getItem(STORAGE_KEY);
      return isChoice(value) ? value : "both";
    } catch (err) {
      return "both";
    }
  }

  function store(value) {
    try {
      window.localStorage.setItem(STORAGE_KEY, value);
    } catch (err) {
      /* not remembered; see readStored */
    }
  }

  function apply(value) {
    document.documentElement.setAttribute("data-lang", value);
    var buttons = document.querySelectorAll(".cyclelib-lang-switch button");
    buttons.forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === value));
    });
  }

  function buildSwitch() {
    var group = document.createElement("div");
    group.className = "cyclelib-lang-switch";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Language / 语言");
    CHOICES.forEach(function (choice) {
      var button = document.createElement("button");
      button.type = "button";
      button.dataset.lang = choice.value;
      button.textContent = choice.label;
      button.title = choice.title;
      button.addEventListener("click", function () {
        store(choice.value);
        apply(choice.value);
      });
      group.appendChild(button);
    });
    document.body.appendChild(group);
    apply(readStored());
  }

  apply(readStored());
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", buildSwitch);
  } else {
    buildSwitch();
  }

  // Another tab changed the choice: follow it.
  window.addEventListener("storage", function (event) {
    if (event.key === STORAGE_KEY) {
      apply(readStored());
    }
  });
})();
