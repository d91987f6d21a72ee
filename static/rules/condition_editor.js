/* The rule condition editor: builds nested all/any/not groups over the JSON textarea of the admin form
 * and writes the tree back into it on every change. The server validates the result regardless; with
 * scripts off the textarea itself is the editor. No inline script: data comes from json_script blocks. */
(function () {
  "use strict";

  var GROUP_LABELS = { all: "all of these", any: "any of these", not: "not this" };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function toModel(node) {
    if (node && typeof node === "object" && !Array.isArray(node)) {
      var kinds = ["all", "any", "not"];
      for (var i = 0; i < kinds.length; i++) {
        var kind = kinds[i];
        if (Object.prototype.hasOwnProperty.call(node, kind)) {
          var body = node[kind];
          var list = Array.isArray(body) ? body : [body];
          return { type: "group", kind: kind, children: list.map(toModel) };
        }
      }
      if (Object.prototype.hasOwnProperty.call(node, "other")) {
        return { type: "leaf", fact: node.fact || "", op: node.op || "", other: node.other || "" };
      }
      return { type: "leaf", fact: node.fact || "", op: node.op || "", value: node.value };
    }
    return { type: "leaf", fact: "", op: "", value: "" };
  }

  function toTree(model) {
    if (model.type === "group") {
      var children = model.children.map(toTree);
      var tree = {};
      tree[model.kind] = model.kind === "not" && children.length === 1 ? children[0] : children;
      return tree;
    }
    if (model.other !== undefined) return { fact: model.fact, op: model.op, other: model.other };
    return { fact: model.fact, op: model.op, value: model.value };
  }

  function setup(root) {
    var textarea = document.getElementById(root.getAttribute("data-for"));
    var catalogue = JSON.parse(document.getElementById("rule-catalogue").textContent);
    var errors = JSON.parse(document.getElementById("rule-errors").textContent || "{}");
    var picker = root.querySelector("template.rule-fact-picker");
    var box = root.querySelector(".rule-tree");
    var subject = document.getElementById("id_subject");
    var tree;
    try {
      tree = JSON.parse(textarea.value || "null");
    } catch (e) {
      return; // unreadable JSON stays in the textarea for the person (and the server's message)
    }
    if (!tree || typeof tree !== "object" || Array.isArray(tree)) tree = { all: [] };
    var model = toModel(tree);
    if (model.type === "leaf") model = { type: "group", kind: "all", children: [model] };

    function sync() {
      textarea.value = JSON.stringify(toTree(model), null, 2);
    }

    function operatorsFor(fact) {
      var info = catalogue.facts[fact];
      return info ? catalogue.operators[info.type] : [];
    }

    function errorList(path) {
      var messages = errors[path];
      if (!messages || !messages.length) return null;
      return el("ul", { className: "errorlist" }, messages.map(function (m) { return el("li", { text: m }); }));
    }

    function visiblePrefixes() {
      return (subject && catalogue.visible[subject.value]) || [];
    }

    function valueInput(info, type, value, onChange) {
      var input;
      if (type === "bool") {
        input = el("select", { "aria-label": "Value" }, [
          el("option", { value: "true", text: "yes / true" }),
          el("option", { value: "false", text: "no / false" }),
        ]);
        input.value = value === false || value === "false" ? "false" : "true";
        onChange(input.value === "true");
        input.addEventListener("change", function () { onChange(input.value === "true"); });
        return input;
      }
      input = el("input", { "aria-label": "Value" });
      if (type === "money" || type === "percent") {
        input.type = "number";
        input.step = "any";
      } else if (type === "int") {
        input.type = "number";
        input.step = "1";
      } else if (type === "date") {
        input.type = "date";
      } else {
        input.type = "text";
        if (info && info.choices && info.choices.length) {
          input.setAttribute("placeholder", info.choices.join(" / "));
        }
      }
      input.value = value === undefined || value === null ? "" : String(value);
      input.addEventListener("input", function () { onChange(input.value); });
      return input;
    }

    function leafView(leaf, path, remove) {
      var info = catalogue.facts[leaf.fact];
      var factSelect = picker.content.querySelector("select").cloneNode(true);
      var prefixes = visiblePrefixes();
      Array.prototype.forEach.call(factSelect.querySelectorAll("option[data-subject]"), function (option) {
        option.disabled = prefixes.length > 0 && prefixes.indexOf(option.getAttribute("data-subject")) < 0;
      });
      factSelect.value = leaf.fact;
      factSelect.addEventListener("change", function () {
        var before = catalogue.facts[leaf.fact];
        leaf.fact = factSelect.value;
        var ops = operatorsFor(leaf.fact);
        if (ops.indexOf(leaf.op) < 0) leaf.op = ops[0] || "";
        var after = catalogue.facts[leaf.fact];
        if (!before || !after || before.type !== after.type) leaf.value = "";
        changed();
      });

      var opSelect = el("select", { className: "rule-op", "aria-label": "Operator" });
      operatorsFor(leaf.fact).forEach(function (op) {
        opSelect.appendChild(el("option", { value: op, text: catalogue.operator_labels[op] || op }));
      });
      if (leaf.op && operatorsFor(leaf.fact).indexOf(leaf.op) >= 0) opSelect.value = leaf.op;
      else leaf.op = opSelect.value;
      opSelect.addEventListener("change", function () {
        var wasList = ["in", "not_in", "between"].indexOf(leaf.op) >= 0;
        leaf.op = opSelect.value;
        var isList = ["in", "not_in", "between"].indexOf(leaf.op) >= 0;
        if (wasList !== isList || leaf.op === "is" || leaf.op === "is_null") leaf.value = "";
        changed();
      });

      var valueBox = el("span", { className: "rule-value" });
      var type = info ? info.type : "text";
      // Compare with a constant value or with another fact ({fact, op, other}).
      var against = el("select", { className: "rule-against", "aria-label": "Compare with" }, [
        el("option", { value: "value", text: "a value" }),
        el("option", { value: "other", text: "another fact" }),
      ]);
      against.value = leaf.other !== undefined ? "other" : "value";
      var comparable = (catalogue.compare_ops || []).indexOf(leaf.op) >= 0;
      against.disabled = !comparable && leaf.other === undefined;
      against.addEventListener("change", function () {
        if (against.value === "other") { leaf.other = ""; delete leaf.value; }
        else { delete leaf.other; leaf.value = ""; }
        changed();
      });
      if (leaf.other !== undefined) {
        var otherSelect = picker.content.querySelector("select").cloneNode(true);
        otherSelect.className = "rule-other";
        otherSelect.setAttribute("aria-label", "Other fact");
        Array.prototype.forEach.call(otherSelect.querySelectorAll("option[data-subject]"), function (option) {
          var same = info && catalogue.facts[option.value] && catalogue.facts[option.value].type === info.type;
          option.disabled = !same || (prefixes.length > 0 && prefixes.indexOf(option.getAttribute("data-subject")) < 0);
        });
        otherSelect.value = leaf.other;
        otherSelect.addEventListener("change", function () { leaf.other = otherSelect.value; sync(); });
        valueBox.appendChild(otherSelect);
      } else if (leaf.op === "is_null" || leaf.op === "is") {
        valueBox.appendChild(valueInput(info, "bool", leaf.value, function (v) { leaf.value = v; sync(); }));
      } else if (leaf.op === "between") {
        var pair = Array.isArray(leaf.value) ? leaf.value.slice(0, 2) : ["", ""];
        while (pair.length < 2) pair.push("");
        leaf.value = pair;
        valueBox.appendChild(valueInput(info, type, pair[0], function (v) { pair[0] = v; sync(); }));
        valueBox.appendChild(document.createTextNode(" and "));
        valueBox.appendChild(valueInput(info, type, pair[1], function (v) { pair[1] = v; sync(); }));
      } else if (leaf.op === "in" || leaf.op === "not_in") {
        var list = el("input", { type: "text", "aria-label": "Values, separated by commas" });
        list.value = Array.isArray(leaf.value) ? leaf.value.join(", ") : String(leaf.value || "");
        list.setAttribute("placeholder", info && info.choices.length ? info.choices.join(", ") : "a, b, c");
        list.addEventListener("input", function () {
          leaf.value = list.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
          sync();
        });
        valueBox.appendChild(list);
      } else {
        valueBox.appendChild(valueInput(info, type, leaf.value, function (v) { leaf.value = v; sync(); }));
      }

      var help = info
        ? catalogue.type_labels[info.type] + (info.unit ? ", " + info.unit : "") + " · from " + info.source +
          " · " + info.description
        : "Pick a fact to see its meaning, type and unit.";
      var removeButton = el("button", { type: "button", className: "rule-remove", text: "remove" });
      removeButton.addEventListener("click", remove);
      return el("div", { className: "rule-leaf", "data-path": path }, [
        el("div", { className: "rule-leaf-row" }, [factSelect, opSelect, against, valueBox, removeButton]),
        el("div", { className: "rule-help", text: help }),
        errorList(path),
      ]);
    }

    function groupView(group, path, remove) {
      var kind = el("select", { className: "rule-kind", "aria-label": "Group" });
      ["all", "any", "not"].forEach(function (k) { kind.appendChild(el("option", { value: k, text: GROUP_LABELS[k] })); });
      kind.value = group.kind;
      kind.addEventListener("change", function () {
        group.kind = kind.value;
        if (group.kind === "not" && group.children.length > 1) {
          group.children = [{ type: "group", kind: "all", children: group.children }];
        }
        changed();
      });
      var addLeaf = el("button", { type: "button", text: "+ condition" });
      addLeaf.addEventListener("click", function () {
        group.children.push({ type: "leaf", fact: "", op: "", value: "" });
        changed();
      });
      var addGroup = el("button", { type: "button", text: "+ group" });
      addGroup.addEventListener("click", function () {
        group.children.push({ type: "group", kind: "any", children: [{ type: "leaf", fact: "", op: "", value: "" }] });
        changed();
      });
      var full = group.kind === "not" && group.children.length >= 1;
      addLeaf.disabled = full;
      addGroup.disabled = full;
      var header = el("div", { className: "rule-group-head" }, [kind, addLeaf, addGroup]);
      if (remove) {
        var removeButton = el("button", { type: "button", className: "rule-remove", text: "remove group" });
        removeButton.addEventListener("click", remove);
        header.appendChild(removeButton);
      }
      var children = el("div", { className: "rule-children" });
      group.children.forEach(function (child, i) {
        var childPath = group.kind === "not" ? path + ".not" : path + "." + group.kind + "[" + i + "]";
        var drop = function () { group.children.splice(i, 1); changed(); };
        children.appendChild(child.type === "group" ? groupView(child, childPath, drop) : leafView(child, childPath, drop));
      });
      return el("fieldset", { className: "rule-group", "data-path": path }, [header, errorList(path), children]);
    }

    function render() {
      box.replaceChildren(groupView(model, "when", null));
    }

    function changed() {
      errors = {}; // messages belong to the tree as it was submitted
      sync();
      render();
    }

    box.hidden = false;
    var json = root.querySelector(".rule-json");
    if (json) json.open = false;
    var readable = root.querySelector(".rule-readable");
    if (readable) readable.hidden = true;
    if (subject) subject.addEventListener("change", render);
    render();
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".rule-editor"), setup);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
