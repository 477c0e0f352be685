"""The dock widget's Qt part: it only composes (docs/architecture.md). ``widget`` builds the
Style Transfer panel from the generated option form (``form``), the layer pickers
(``inputs_panel``), the remembered settings (``remembered``), the device probe (``probe``) and a
run controller (``controller``) that connects the worker to the sink, the status text and the
loss plot."""
