"""Export: coloured text as standalone HTML, the neuron card, colour scales, the notebook view."""
